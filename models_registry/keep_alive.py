"""Keep-alive as operators write it, in Ollama's forms: "5m", "30s", "1h30m", "90", "0", "never", "-1"."""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# A bare number of seconds, or Go's duration form that Ollama parses ("1h30m", "1.5h", "2m30s").
_SECONDS = re.compile(r"^\d+(?:\.\d+)?$")
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?[smhd])+$")
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
NEVER_WORDS = ("never", "forever", "-1")
# The column's range on every database (a 32-bit integer): longer is "never".
LONGEST_SECONDS = 2**31 - 1


def parse_keep_alive(text: str) -> int | None:
    """Seconds, or None for never; ValidationError naming the accepted forms otherwise."""
    value = (text or "").strip().lower()
    if value in NEVER_WORDS or (value.startswith("-") and value[1:].isdigit()):
        return None  # as Ollama's negative keep_alive: never unload
    compact = re.sub(r"\s+", "", value)
    if _SECONDS.match(compact):
        seconds = float(compact)
    elif _DURATION.match(compact):
        seconds = sum(float(number) * _UNITS[unit] for number, unit in _PART.findall(compact))
    else:
        raise ValidationError(
            f"{text!r} is not a keep-alive: write seconds (300), a duration (30s, 5m, 1h30m), 0 (unload as "
            f"soon as its requests end) or never."
        )
    if seconds > LONGEST_SECONDS:  # also a float that overflowed to inf
        raise ValidationError(f"{text!r} is longer than {LONGEST_SECONDS} seconds: write never instead.")
    return round(seconds)


def format_keep_alive(seconds: int | None) -> str:
    """The shortest of Ollama's forms for `seconds` (None: never)."""
    if seconds is None:
        return "never"
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s" if seconds else "0"
