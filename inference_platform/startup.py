"""A wrong setting stops a program with one clear line, not a traceback from the settings import."""

import sys
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured


def settings_or_exit() -> None:
    """Load the settings now; on a wrong one, exit naming the program and the setting."""
    from django.conf import settings

    try:
        settings.INSTALLED_APPS  # noqa: B018  (imports the settings)
    except ImproperlyConfigured as exc:
        sys.exit(f"{Path(sys.argv[0]).name}: {exc}")
