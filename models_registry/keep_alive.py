"""Keep-alive as operators write it, in Ollama's forms: "5m", "30s", "1h", "90", "0", "never", "-1"."""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd]?)$")
NEVER_WORDS = ("never", "forever", "-1")


def parse_keep_alive(text: str) -> int | None:
    """Seconds, or None for never; ValidationError naming the accepted forms otherwise."""
    value = (text or "").strip().lower()
    if value in NEVER_WORDS or (value.startswith("-") and value[1:].isdigit()):
        return None  # as Ollama's negative keep_alive: never unload
    match = _DURATION.match(value)
    if not match:
        raise ValidationError(
            f"{text!r} is not a keep-alive: write seconds (300), a duration (30s, 5m, 1h), 0 (unload as soon "
            f"as its requests end) or never."
        )
    return round(float(match.group(1)) * _UNITS[match.group(2)])


def format_keep_alive(seconds: int | None) -> str:
    """The shortest of Ollama's forms for `seconds` (None: never)."""
    if seconds is None:
        return "never"
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s" if seconds else "0"
