"""The embedded default's secret key: generated once into a file only its owner can read."""

import os
import secrets
import tempfile
from pathlib import Path


def secret_key_from_file(path: Path) -> str:
    """Read the key kept at `path`, creating it (mode 0600) on first use."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written whole to a private temporary file, then linked into place: a process starting at
    # the same moment either wins the link or reads the winner's complete key, never a partial one.
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".secret_key.")  # mode 0600
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_urlsafe(50) + "\n")
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
    finally:
        os.unlink(temporary)
    return path.read_text().strip()
