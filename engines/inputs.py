"""Turning a request into model input without letting odd input crash an engine.

Engines that render chat templates and tokenize text themselves (llama.cpp, MLX) share
these: null content, text that is not valid Unicode, a template that refuses the
conversation and an empty prompt all become InvalidInputError (a 400), never a crash.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .base import GenerationRequest
from .errors import InvalidInputError, UnsupportedParameterError


def input_param(request: GenerationRequest) -> str:
    """The request field that holds the model's input, for error messages."""
    return "messages" if request.messages is not None else "prompt"


def text_messages(messages: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages with content always a string, as chat templates and many servers expect.

    OpenAI allows null content (an assistant turn that only calls tools), and templates
    concatenate content: None would fail inside the template.
    """
    return [{**message, "content": message.get("content") or ""} for message in messages]


def render_template(render: Callable[[list[dict[str, Any]]], Any], messages: Iterable[dict[str, Any]]) -> Any:
    """Call `render` on the messages; a template that refuses them is the client's error.

    Templates reject conversations with `raise_exception` (roles that do not alternate,
    a system message out of place): llama-cpp-python raises ValueError for it, transformers
    jinja2's TemplateError.
    """
    from jinja2 import TemplateError

    try:
        return render(text_messages(messages))
    except (TemplateError, ValueError) as exc:
        raise InvalidInputError(f"The model's chat template cannot format these messages: {exc}") from None


def utf8(text: str, *, param: str) -> bytes:
    """`text` as UTF-8 for a tokenizer; a lone surrogate is bad input, not an engine failure."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(
            f"Invalid value for '{param}': the text holds a lone UTF-16 surrogate, which is not a character.",
            param=param,
        ) from None


def require_tokens(prompt_tokens: list[int], request: GenerationRequest, model: str) -> None:
    """Refuse a prompt of zero tokens: the model has nothing to continue from.

    An empty prompt only gets here when the model adds no start token of its own, and
    llama.cpp fails an assertion on an empty batch.
    """
    if not prompt_tokens:
        raise empty_input(
            request, f"Model `{model}` adds no start token, so an empty input leaves nothing to generate from."
        )


def empty_input(request: GenerationRequest, why: str) -> InvalidInputError:
    """The error for an input that is empty, naming the field it came in."""
    param = input_param(request)
    return InvalidInputError(f"Invalid value for '{param}': must not be empty. {why}", param=param)


def require_dimensions(request: GenerationRequest, size: int, model: str) -> None:
    """Refuse an embed request whose `dimensions` is not the model's vector size: no engine here
    shortens vectors, and a silently different size would break the client's index."""
    if request.dimensions is not None and request.dimensions != size:
        raise UnsupportedParameterError(
            f"Model `{model}` makes vectors of {size} dimensions; 'dimensions' must be {size} or left out "
            f"(shortened vectors are not supported).",
            param="dimensions",
        )
