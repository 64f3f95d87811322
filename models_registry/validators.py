"""Validation for registry fields, shared by the models and the admin forms."""

from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator

MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"

validate_model_name = RegexValidator(
    MODEL_NAME_PATTERN,
    "Use 1-128 letters, digits and . _ : / -, starting with a letter or digit "
    "(this is the `model` value clients send).",
)

SAMPLING_DEFAULT_KEYS = {
    "temperature", "top_p", "max_tokens", "stop", "seed", "presence_penalty", "frequency_penalty",
}


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


def validate_json_object(value) -> None:
    if not isinstance(value, dict):
        raise ValidationError("Must be a JSON object.")
