"""Each engine's options (the `engine_options` JSON) as typed admin form fields, read from the engines' load().

A blank field means "not set": the key is left out and the engine uses its default. Keys that
no field of the model's engine covers stay in the form's "other options (JSON)" box. A secret
(the upstream's API key) is never written into the page: blank keeps the stored one, and a
"forget" box beside it removes it.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Callable
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from engines.admission import DEFAULT_MAX_WAITING
from engines.echo import DEFAULT_EMBEDDING_SIZE
from engines.llama_cpp import DEFAULT_N_BATCH, DEFAULT_NICE
from engines.llama_embeddings import POOLING_NAMES
from engines.mlx import DEFAULT_PREFILL_STEP_SIZE
from engines.openai_client import DEFAULT_TIMEOUT_S
from engines.upstream import UPSTREAM_KEY_FROM_ENV, key_variable

from .validators import URL_PATTERN


def _same(value: Any) -> Any:
    return value


@dataclasses.dataclass(frozen=True)
class Option:
    """One engine option: its key in engine_options, its form field, and the conversions either way."""

    key: str
    field: Callable[[], forms.Field]
    # The stored value as the field shows it, and the field's cleaned value as stored (None: leave it out).
    to_form: Callable[[Any], Any] = _same
    to_option: Callable[[Any], Any] = _same
    secret: bool = False


def _integer(help_text: str, *, low: int | None = None, high: int | None = None, label: str | None = None):
    return lambda: forms.IntegerField(required=False, min_value=low, max_value=high, help_text=help_text, label=label)


def _number(help_text: str, *, low: float | None = None, high: float | None = None, label: str | None = None):
    return lambda: forms.FloatField(required=False, min_value=low, max_value=high, help_text=help_text, label=label)


def _text(help_text: str, *, label: str | None = None, widget: type[forms.Widget] | None = None):
    return lambda: forms.CharField(required=False, help_text=help_text, label=label, widget=widget)


def _positive(value: float | None) -> float | None:
    if value is not None and value <= 0:
        raise ValidationError("Must be more than 0.")
    return value


def _choice(help_text: str, choices: list[tuple[str, str]], *, label: str | None = None):
    return lambda: forms.ChoiceField(
        required=False, choices=[("", "default"), *choices], help_text=help_text, label=label
    )


# Booleans are three-way: blank keeps the engine's default, so a stored options dict only holds what
# an operator chose.
_YES_NO = [("yes", "yes"), ("no", "no")]


def _bool_to_form(value: Any) -> str:
    return "" if value is None else ("yes" if value else "no")


def _bool_to_option(value: str) -> bool | None:
    return None if not value else value == "yes"


def _flash_to_form(value: Any) -> str:
    if value is None:
        return ""
    return "auto" if value == "auto" else ("on" if value else "off")


def _flash_to_option(value: str) -> str | bool | None:
    return {"": None, "auto": "auto", "on": True, "off": False}[value]


def _args_to_form(value: Any) -> str:
    return shlex.join(value) if isinstance(value, list) and all(isinstance(a, str) for a in value) else (value or "")


def _args_to_option(value: str) -> list[str] | None:
    try:
        return shlex.split(value) or None
    except ValueError as exc:
        raise ValidationError(f"Not a command line: {exc}.") from exc


def _gpu_to_form(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return "" if value is None else str(value)


def _gpu_to_option(value: str) -> int | list[int] | None:
    parts = [p.strip() for p in value.split(",") if p.strip()]
    if not parts:
        return None
    if not all(p.isdigit() for p in parts):
        raise ValidationError("GPU indices: a number, or numbers separated by commas (e.g. 0,1).")
    numbers = [int(p) for p in parts]
    return numbers[0] if len(numbers) == 1 else numbers


def _url_to_option(value: str) -> str | None:
    if value and not URL_PATTERN.match(value):
        raise ValidationError("An http:// or https:// URL, e.g. http://127.0.0.1:8080/v1.")
    return value or None


def _blank_is_none(value: Any) -> Any:
    return None if value in ("", None) else value


def _upstream_key_to_option(value: str) -> str | None:
    try:
        key_variable(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from exc
    return value or None


MAX_WAITING = Option(
    "max_waiting",
    _integer(
        f"Requests that may queue for a free slot before new ones get a 429 (default {DEFAULT_MAX_WAITING}). "
        "0: none wait.",
        low=0,
        label="max waiting",
    ),
)

_SAMPLING = (
    Option("top_k", _integer("Sample from the k likeliest tokens only (default 0: off).", low=0)),
    Option(
        "min_p",
        _number("Drop tokens below this fraction of the likeliest one's probability (default 0).", low=0, high=1),
    ),
    Option("repeat_penalty", _number("Penalty on repeated tokens (default 1: none).", low=0)),
)

_TIMEOUT = Option(
    "timeout",
    _number(f"Seconds a stream may stay silent before it fails (default {DEFAULT_TIMEOUT_S:g}).", label="timeout (s)"),
    to_option=_positive,
)

_SUPERVISED = (
    Option("port", _integer("The child server's port (default: a free one).", low=0, high=65535)),
    Option(
        "startup_timeout_s",
        _number("Seconds the child may take to become healthy (default 900).", label="startup timeout (s)"),
        to_option=_positive,
    ),
    Option(
        "max_restarts",
        _integer("Restarts allowed within the restart window before it gives up (default 3).", low=0),
    ),
    Option(
        "restart_window_s", _number("The restart window, seconds (default 300).", low=0, label="restart window (s)")
    ),
    Option("shutdown_grace_s", _number("Seconds it has to stop before it is killed (default 10).", low=0)),
)

ENGINE_OPTIONS: dict[str, tuple[Option, ...]] = {
    "llama_cpp": (
        Option("n_threads", _integer("Threads for generation (default: the physical cores).", low=1)),
        Option("n_threads_batch", _integer("Threads for prompt processing (default: n_threads).", low=1)),
        Option("n_batch", _integer(f"Tokens per decode step (default {DEFAULT_N_BATCH}).", low=1)),
        Option("n_gpu_layers", _integer("Layers offloaded to the GPU (default 0; -1: all).", low=-1)),
        Option(
            "flash_attn",
            _choice(
                "Flash attention (default auto). Off gives the same greedy text as llama-cpp-python's Llama.",
                [("auto", "auto"), ("on", "on"), ("off", "off")],
                label="flash attention",
            ),
            to_form=_flash_to_form,
            to_option=_flash_to_option,
        ),
        Option(
            "kv_unified",
            _choice("One KV pool for all slots (default yes): keeps them batched together.", _YES_NO),
            to_form=_bool_to_form,
            to_option=_bool_to_option,
        ),
        Option(
            "prefix_cache",
            _choice("Reuse the KV of prompts' shared prefixes (default yes).", _YES_NO, label="prefix cache"),
            to_form=_bool_to_form,
            to_option=_bool_to_option,
        ),
        Option(
            "nice",
            _integer(
                f"Niceness added to the decode threads (default {DEFAULT_NICE}), so that the web process is served "
                "first when both want a core.",
                low=0,
                high=19,
            ),
        ),
        *_SAMPLING,
        Option(
            "pooling",
            _choice(
                "Embed models: how token vectors become one (default: the GGUF's own, else mean).",
                [(name, name) for name in POOLING_NAMES],
            ),
            to_option=_blank_is_none,
        ),
        MAX_WAITING,
    ),
    "echo": (
        Option(
            "token_delay_ms",
            _number("Pause before each token, ms (default 0): makes concurrency observable.", low=0),
        ),
        Option(
            "embedding_size",
            _integer(f"Dimensions of its embeddings (default {DEFAULT_EMBEDDING_SIZE}).", low=1),
        ),
        MAX_WAITING,
    ),
    "upstream": (
        Option(
            "base_url",
            _text("Required: the upstream's OpenAI base URL, e.g. http://127.0.0.1:8080/v1.", label="base URL"),
            to_option=_url_to_option,
        ),
        Option(
            "api_key",
            _text(
                f"The key sent to the upstream as a bearer token. Better: {UPSTREAM_KEY_FROM_ENV}NAME_API_KEY, "
                "which reads it from that environment variable on each host, so the database never holds it. "
                "Never shown again: blank keeps the stored one.",
                label="API key",
            ),
            to_option=_upstream_key_to_option,
            secret=True,
        ),
        Option(
            "model",
            _text("The upstream's name for the model (default: the source, else this model's name)."),
            to_option=_blank_is_none,
        ),
        _TIMEOUT,
        Option(
            "stream",
            _choice(
                "Stream from the upstream (default yes). No for servers that report usage only unstreamed.",
                _YES_NO,
            ),
            to_form=_bool_to_form,
            to_option=_bool_to_option,
        ),
        MAX_WAITING,
    ),
    "vllm": (
        Option(
            "gpu",
            _text("GPU index, or indices separated by commas for tensor parallelism (default: all visible)."),
            to_form=_gpu_to_form,
            to_option=_gpu_to_option,
        ),
        Option(
            "max_model_len",
            _integer("vLLM's --max-model-len (default: the context length).", low=1, label="max model len"),
        ),
        Option(
            "gpu_memory_utilization",
            _number("Fraction of GPU memory vLLM may take, above 0 up to 1 (default 0.9).", high=1),
            to_option=_positive,
        ),
        Option(
            "extra_args",
            _text("More arguments for `vllm serve`, as on a command line, e.g. --dtype half.", label="extra args"),
            to_form=_args_to_form,
            to_option=_args_to_option,
        ),
        Option(
            "vllm_executable",
            _text("The vllm command to run (default: the one installed beside Python)."),
            to_option=_blank_is_none,
        ),
        _TIMEOUT,
        *_SUPERVISED,
        MAX_WAITING,
    ),
    "mlx": (
        Option(
            "prefill_step_size",
            _integer(f"Prompt tokens per prefill step (default {DEFAULT_PREFILL_STEP_SIZE}).", low=1),
        ),
        MAX_WAITING,
    ),
}


def label_of(key: str) -> str:
    return key.replace("_", " ")


def field_name(engine: str, key: str) -> str:
    """The form field that holds option `key` of `engine`."""
    return f"option_{engine}_{key}"


def forget_field_name(engine: str, key: str) -> str:
    """The checkbox that removes the stored secret `key` of `engine`."""
    return f"{field_name(engine, key)}_forget"


def engine_field_names(engine: str) -> list[str]:
    """The engine's option fields in page order, each secret followed by its "forget" box."""
    names = []
    for option in ENGINE_OPTIONS[engine]:
        names.append(field_name(engine, option.key))
        if option.secret:
            names.append(forget_field_name(engine, option.key))
    return names


def option_fields() -> dict[str, forms.Field]:
    """A fresh form field for every option of every engine, by field name."""
    fields: dict[str, forms.Field] = {}
    for engine, options in ENGINE_OPTIONS.items():
        for option in options:
            field = option.field()
            field.label = field.label or label_of(option.key)
            if option.secret:
                field.widget = forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"})
                fields[forget_field_name(engine, option.key)] = forms.BooleanField(
                    required=False, label=f"forget the stored {field.label}"
                )
            fields[field_name(engine, option.key)] = field
    return fields


def split_options(engine: str, options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Stored options as (initial values of the engine's fields, the rest for the JSON box)."""
    known = {o.key: o for o in ENGINE_OPTIONS.get(engine, ())}
    initial: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    for key, value in options.items():
        option = known.get(key)
        if option is None:
            rest[key] = value
        elif not option.secret:  # a secret's field starts blank: blank keeps it (options_from_fields)
            initial[field_name(engine, key)] = option.to_form(value)
    return initial, rest


def options_from_fields(
    engine: str, cleaned: dict[str, Any], stored: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The engine's typed fields as engine options, and errors by field name. `stored`: the options
    saved before for this engine, whose secrets a blank field keeps."""
    options: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for option in ENGINE_OPTIONS.get(engine, ()):
        name = field_name(engine, option.key)
        value = cleaned.get(name)
        if value is None or value == "":
            if option.secret and option.key in stored and not cleaned.get(forget_field_name(engine, option.key)):
                options[option.key] = stored[option.key]
            continue
        try:
            value = option.to_option(value)
        except ValidationError as exc:
            errors[name] = exc.messages
            continue
        if value is not None:
            options[option.key] = value
    return options, errors
