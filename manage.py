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

        environ.Env.read_env(Path(__file__).resolve().parent / ".env")
        os.environ.setdefault("DEBUG", "false")

    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        settings.INSTALLED_APPS  # noqa: B018  (imports the settings)
    except ImproperlyConfigured as exc:
        # A setting the operator got wrong: one line that says which, not a traceback.
        sys.exit(f"{Path(sys.argv[0]).name}: {exc}")
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
