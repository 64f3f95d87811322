"""Small form pieces for the model form: keep-alive durations as Ollama writes them, text inputs with
suggestions, and the GGUF files an operator can pick as a source."""

from __future__ import annotations

import re
from pathlib import Path

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.html import format_html, format_html_join

from .bundled import bundled_model_path

# Go durations as Ollama's keep_alive takes them ("5m", "1h30m", "45s"; a bare number is seconds).
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
NEVER = ("never", "inf", "infinite")


def keep_alive_seconds(text: str) -> int | None:
    """Ollama's keep_alive forms as seconds: "0" now, "5m", "30s", "1h30m", 300; "never" or a negative: None."""
    value = text.strip().lower()
    if value in NEVER:
        return None
    try:
        number = float(value)
    except ValueError:
        number = None
    if number is not None:
        return None if number < 0 else round(number)
    if value.startswith("-") and _whole_duration(value[1:]):
        return None
    if not _whole_duration(value):
        raise ValidationError(
            f'"{text}" is not a keep-alive: use seconds (300), a duration (5m, 30s, 1h, 1h30m), 0 or never.'
        )
    total = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(value))
    return round(total)


def _whole_duration(value: str) -> bool:
    return bool(value) and "".join(m.group(0) for m in _DURATION_PART.finditer(value)) == value


def keep_alive_text(seconds: int | None) -> str:
    """keep_alive_seconds as the form shows it: "never", "0", "5m", "1h", "90s"."""
    if seconds is None:
        return "never"
    if seconds and seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds and seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s" if seconds else "0"


class KeepAliveField(forms.Field):
    """A keep-alive typed as Ollama takes it; cleans to seconds, or None for never."""

    widget = forms.TextInput

    def prepare_value(self, value):
        return keep_alive_text(value) if value is None or isinstance(value, int) else value

    def to_python(self, value):
        text = "" if value is None else str(value).strip()
        if not text:
            if self.required:
                raise ValidationError(self.error_messages["required"], code="required")
            return None
        return keep_alive_seconds(text)

    def validate(self, value):
        pass  # to_python did it: None ("never") is a value here, not a missing one


class SuggestingTextInput(forms.TextInput):
    """A text input with a <datalist> of suggestions: the operator picks one or types anything."""

    def __init__(self, attrs=None, suggestions: list[str] | None = None):
        super().__init__(attrs)
        self.suggestions = list(suggestions or [])

    def render(self, name, value, attrs=None, renderer=None):
        list_id = f"{(attrs or {}).get('id') or 'id_' + name}_suggestions"
        attrs = {**(attrs or {}), "list": list_id}
        options = format_html_join("", '<option value="{}"></option>', ((s,) for s in self.suggestions))
        return format_html(
            '{}<datalist id="{}">{}</datalist>', super().render(name, value, attrs, renderer), list_id, options
        )


def gguf_sources(models_dir: str | None = None) -> list[str]:
    """GGUF files under MODELS_DIR (recursive, sorted), then the bundled model: what the source field offers."""
    directory = settings.MODELS_DIR if models_dir is None else models_dir
    found: list[str] = []
    if directory:
        root = Path(directory).expanduser()
        if root.is_dir():
            found = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() == ".gguf" and p.is_file())
    bundled = bundled_model_path()
    if bundled is not None and str(bundled) not in found:
        found.append(str(bundled))
    return found
