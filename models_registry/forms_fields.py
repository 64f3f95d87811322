"""Small form pieces for the model form: keep-alive durations as Ollama writes them, text inputs with
suggestions, and the GGUF files an operator can pick as a source."""

from __future__ import annotations

from pathlib import Path

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.html import format_html, format_html_join

from .bundled import bundled_model_path
from .keep_alive import format_keep_alive, parse_keep_alive


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
