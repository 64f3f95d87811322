"""Start-up of every program (manage.py, the ASGI app, Celery): settings checked, their directories made.

A wrong setting stops a program with one clear line, not a traceback from the settings import.
"""

import sys
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def settings_or_exit() -> None:
    """Load the settings now (on a wrong one, exit naming the program and the setting), then make their directories."""
    try:
        settings.INSTALLED_APPS  # noqa: B018  (imports the settings)
    except ImproperlyConfigured as exc:
        sys.exit(f"{Path(sys.argv[0]).name}: {exc}")
    make_directories()


def make_directories() -> None:
    """The embedded SQLite file's directory, and the static files' (WhiteNoise warns when one is missing)."""
    for directory in (settings.VAR_DIR, settings.STATIC_ROOT):
        Path(directory).mkdir(exist_ok=True)
