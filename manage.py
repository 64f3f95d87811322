#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys
from pathlib import Path


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inference_platform.settings")
    if sys.argv[1:2] == ["serve"]:
        # `serve` (./run.sh) is what people expose, so it is no debug server unless DEBUG says so,
        # in the environment or in .env (read first, so that it wins over this default).
        import environ

        dotenv = Path(__file__).resolve().parent / ".env"
        if dotenv.exists():
            environ.Env.read_env(dotenv)
        os.environ.setdefault("DEBUG", "false")

    from django.core.management import execute_from_command_line

    from inference_platform.startup import settings_or_exit

    settings_or_exit()
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
