"""Small form pieces for the model form: keep-alive durations as Ollama writes them, text inputs with
suggestions, and the GGUF files an operator can pick as a source."""

from __future__ import annotations

import json
from pathlib import Path

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.forms.fields import InvalidJSONInput
from django.utils.html import format_html, format_html_join

from engines.json_text import InvalidJson, parse_json

from .bundled import bundled_model_path
from .keep_alive import format_keep_alive, parse_keep_alive


class StrictJSONField(forms.JSONField):
    """Django's JSON field with the platform's JSON rules (engines.json_text): deep nesting or a lone
    surrogate escape is a form error. Django's own field parsed `"\\ud800"` and, re-showing the form,
    wrote the lone surrogate into the page, which cannot be encoded: a 500."""

    def to_python(self, value):
        if isinstance(value, str) and value.strip() and not self.disabled:
            try:
                parse_json(value)
            except InvalidJson as exc:
                if not _malformed(value):  # malformed text gets Django's own "Enter a valid JSON."
                    raise ValidationError(f"Not JSON this platform accepts: {exc}.", code="invalid") from None
        return super().to_python(value)

    def bound_data(self, data, initial):
        if isinstance(data, str) and not self.disabled:
            try:
                parse_json(data)
            except InvalidJson:
                return InvalidJSONInput(data)  # shown as typed
        return super().bound_data(data, initial)


def _malformed(text: str) -> bool:
    """Whether Python's json cannot read the text at all (as opposed to reading what we refuse)."""
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return True
    except (RecursionError, ValueError):
        return False
    return False


class KeepAliveField(forms.Field):
    """A keep-alive typed as Ollama takes it; cleans to seconds, or None for never."""

    widget = forms.TextInput

    def prepare_value(self, value):
        return format_keep_alive(value) if value is None or isinstance(value, int) else value

    def to_python(self, value):
        text = "" if value is None else str(value).strip()
        if not text:
            if self.required:
                raise ValidationError(self.error_messages["required"], code="required")
            return None
        return parse_keep_alive(text)

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
