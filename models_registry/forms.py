"""The served model's admin form: typed fields where the model stores JSON, so an operator never writes any.

Engine options are one field per option of the chosen engine (forms_engine_options), default
parameters one per sampling default, aliases a comma-separated list, keep-alive a duration as
Ollama takes it. Whatever no field covers stays in a JSON box, so nothing stored is dropped.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from .engine_choice import engine_choice
from .forms_engine_options import ENGINE_OPTIONS, option_fields, options_from_fields, split_options
from .forms_fields import KeepAliveField, StrictJSONField, SuggestingTextInput, gguf_sources
from .models import ServedModel
from .selectors import live_worker_placements
from .validators import validate_aliases

FORM_FIELDS = [
    "name",
    "task",
    "aliases",
    "enabled",
    "description",
    "owned_by",
    "engine",
    "source",
    "context_length",
    "engine_options",
    "default_params",
    "replicas",
    "placement_label",
    "placement_host",
    "keep_alive_seconds",
    "slots",
]

# Sampling defaults with a typed field; the rest (stop) stay in the JSON box.
DEFAULT_PARAM_FIELDS: dict[str, forms.Field] = {
    "temperature": forms.FloatField(required=False, min_value=0, max_value=2, label="temperature", help_text="0 to 2."),
    "top_p": forms.FloatField(required=False, min_value=0, max_value=1, label="top p", help_text="0 to 1."),
    "max_tokens": forms.IntegerField(
        required=False, min_value=1, label="max tokens", help_text="Completion tokens when a request sets none."
    ),
    "seed": forms.IntegerField(required=False, label="seed"),
    "presence_penalty": forms.FloatField(required=False, min_value=-2, max_value=2, label="presence penalty"),
    "frequency_penalty": forms.FloatField(required=False, min_value=-2, max_value=2, label="frequency penalty"),
}


def default_field_name(key: str) -> str:
    return f"default_{key}"


def form_engine(engine: str, task: str) -> str:
    """The engine whose option fields the form shows: `auto` as it resolves here."""
    if engine != "auto":
        return engine
    return engine_choice(ServedModel(engine="auto", task=task or ServedModel.Task.GENERATE))[0]


def auto_engines() -> dict[str, str]:
    """What `auto` resolves to here for each task (the page's script shows that engine's fields)."""
    return {task: form_engine("auto", task) for task in ServedModel.Task.values}


class ServedModelForm(forms.ModelForm):
    aliases = forms.CharField(
        required=False,
        help_text="Other names clients may use, separated by commas, e.g. smol, default.",
    )
    engine_options = StrictJSONField(
        required=False,
        initial=dict,
        label="other options (JSON)",
        help_text='Options no field above covers, as a JSON object, e.g. {"command": ["..."]}. '
        "Kept as they are; a key may not also be set in a field.",
    )
    default_params = StrictJSONField(
        required=False,
        initial=dict,
        label="other defaults (JSON)",
        help_text='Sampling defaults without a field above, e.g. {"stop": ["\\n\\n"]}.',
    )
    keep_alive_seconds = KeepAliveField(
        label="keep-alive",
        initial=300,
        help_text="On-demand models: how long a copy stays loaded with no requests, as Ollama's keep_alive: "
        "5m, 30s, 1h or seconds (300). 0: unload as soon as its requests end. never (or -1): never unload.",
    )

    class Meta:
        model = ServedModel
        fields = FORM_FIELDS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._suggest("source", gguf_sources())
        labels, hosts = live_worker_placements()
        self._suggest("placement_label", labels)
        self._suggest("placement_host", hosts)
        instance = self.instance
        if instance.pk is None:
            return
        typed, rest = split_options(form_engine(instance.engine, instance.task), dict(instance.engine_options or {}))
        self.initial.update(typed)
        self.initial["engine_options"] = rest
        params = dict(instance.default_params or {})
        for key in DEFAULT_PARAM_FIELDS:
            if key in params:
                self.initial[default_field_name(key)] = params.pop(key)
        self.initial["default_params"] = params
        self.initial["aliases"] = ", ".join(instance.aliases or [])

    def _suggest(self, name: str, suggestions: list[str]) -> None:
        field = self.fields.get(name)
        if field is not None:
            field.widget = SuggestingTextInput(attrs=field.widget.attrs, suggestions=suggestions)

    def clean_aliases(self) -> list[str]:
        text = (self.cleaned_data.get("aliases") or "").strip()
        if text.startswith("["):  # a JSON list, as the field used to take
            try:
                aliases = json.loads(text)
            except ValueError as exc:
                raise ValidationError("Names separated by commas, e.g. smol, default.") from exc
        else:
            aliases = [a.strip() for a in text.split(",") if a.strip()]
        validate_aliases(aliases)
        if len(set(aliases)) != len(aliases):
            raise ValidationError("An alias is listed twice.")
        return aliases

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or self.cleaned_data
        engine = form_engine(cleaned.get("engine") or "auto", cleaned.get("task") or ServedModel.Task.GENERATE)
        same_engine = self.instance.pk is not None and self.instance.engine == cleaned.get("engine")
        stored = dict(self.instance.engine_options or {}) if same_engine else {}
        options, errors = options_from_fields(engine, cleaned, stored)
        for name, messages in errors.items():
            self.add_error(name, messages)
        self._set_merged(cleaned, "engine_options", options)
        defaults = {
            key: cleaned[default_field_name(key)]
            for key in DEFAULT_PARAM_FIELDS
            if cleaned.get(default_field_name(key)) is not None
        }
        self._set_merged(cleaned, "default_params", defaults)
        return cleaned

    def _set_merged(self, cleaned: dict[str, Any], name: str, typed: dict[str, Any]) -> None:
        """The JSON box `name` with the typed fields' values added, or a form error on the box."""
        if name in self.errors:
            return
        other = cleaned.get(name)
        if other is None:
            other = {}
        if not isinstance(other, dict):
            self.add_error(name, 'Must be a JSON object, e.g. {"key": "value"}.')
            return
        both = sorted(set(other) & set(typed))
        if both:
            self.add_error(name, f"Set in a field above and here too: {', '.join(both)}. Keep one.")
            return
        cleaned[name] = {**other, **typed}


def _declare(form: type[forms.ModelForm], fields: dict[str, forms.Field]) -> None:
    # Declared after the class: ModelAdmin builds its form from fields named in the fieldsets, which
    # must be declared fields of the form class (not ones added per instance).
    form.base_fields.update(fields)
    form.declared_fields.update(fields)


_declare(ServedModelForm, option_fields())
_declare(ServedModelForm, {default_field_name(k): f for k, f in DEFAULT_PARAM_FIELDS.items()})

ENGINES_WITH_OPTIONS = list(ENGINE_OPTIONS)
