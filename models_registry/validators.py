"""Validation for registry fields, shared by the models and the admin forms."""

import re
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator

MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"

URL_PATTERN = re.compile(r"^https?://[^\s/]+(/\S*)?$")

validate_model_name = RegexValidator(
    MODEL_NAME_PATTERN,
    "Use 1-128 letters, digits and . _ : / -, starting with a letter or digit "
    "(this is the `model` value clients send).",
)


def _number(low: float, high: float):
    return lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and low <= v <= high


def _integer(low: float = float("-inf")):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def _stop(value) -> bool:
    sequences = [value] if isinstance(value, str) else value
    return isinstance(sequences, list) and len(sequences) <= 4 and all(isinstance(s, str) and s for s in sequences)


# What a request may send for each sampling default (as api/openai/serializers.py accepts it): a default
# the API would refuse from a client is refused when the model is saved, not on every request later.
SAMPLING_DEFAULTS = {
    "temperature": (_number(0, 2), "a number from 0 to 2"),
    "top_p": (_number(0, 1), "a number from 0 to 1"),
    "max_tokens": (_integer(1), "an integer of at least 1"),
    "stop": (_stop, "a string or a list of up to 4 strings"),
    "seed": (_integer(), "an integer"),
    "presence_penalty": (_number(-2, 2), "a number from -2 to 2"),
    "frequency_penalty": (_number(-2, 2), "a number from -2 to 2"),
}
SAMPLING_DEFAULT_KEYS = set(SAMPLING_DEFAULTS)


def validate_source_path(value: str) -> None:
    """A model source must be an existing GGUF file or model directory."""
    path = Path(value).expanduser()
    if not path.exists():
        raise ValidationError(f"No file or directory at {value}.")
    if path.is_file() and path.suffix.lower() != ".gguf":
        raise ValidationError(f"{value} is a file but not a .gguf file; point at a GGUF or a model directory.")


def validate_aliases(value) -> None:
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise ValidationError('Aliases must be a JSON list of names, e.g. ["smol", "default"].')
    for alias in value:
        validate_model_name(alias)


def validate_default_params(value) -> None:
    if not isinstance(value, dict):
        raise ValidationError('Default parameters must be a JSON object, e.g. {"temperature": 0.7}.')
    unknown = sorted(set(value) - SAMPLING_DEFAULT_KEYS)
    if unknown:
        raise ValidationError(
            f"Unknown default parameter(s): {', '.join(unknown)}. Allowed: {', '.join(sorted(SAMPLING_DEFAULT_KEYS))}."
        )
    for name, default in value.items():
        valid, expected = SAMPLING_DEFAULTS[name]
        if not valid(default):
            raise ValidationError(f"{name} must be {expected}.")


def validate_json_object(value) -> None:
    if not isinstance(value, dict):
        raise ValidationError("Must be a JSON object.")


HF_MODEL_ID_PATTERN = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def validate_source_for_engine(engine: str, source: str, engine_options) -> None:
    """What each engine needs as its source (and, for upstream, its base URL)."""
    if engine == "echo":
        return
    if engine == "upstream":
        base_url = (engine_options or {}).get("base_url") if isinstance(engine_options, dict) else None
        if not isinstance(base_url, str) or not URL_PATTERN.match(base_url):
            raise ValidationError(
                {
                    "engine_options": [
                        'The upstream engine needs {"base_url": "http://host:port/v1"} (and optionally "api_key").'
                    ]
                }
            )
        return
    if not source:
        raise ValidationError("A source is required: a GGUF file or a model directory.")
    if engine == "vllm" and HF_MODEL_ID_PATTERN.match(source) and not Path(source).exists():
        return  # vLLM resolves Hugging Face ids from its own cache on the GPU host
    validate_source_path(source)
