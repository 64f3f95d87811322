"""OpenAI request bodies into the platform's request: validation, sampling defaults, features used."""

from __future__ import annotations

from typing import cast

from engines.base import GenerationRequest, OutputFormat, SamplingParams, ToolChoice, ToolSpec
from models_registry.models import ServedModel
from serving.errors import UnsupportedParameter

from ..shared_serializers import sharing_bound_fields
from .format import CHAT, TEXT
from .serializers import ChatCompletionRequestSerializer, CompletionRequestSerializer

_SERIALIZERS = {
    CHAT: sharing_bound_fields(ChatCompletionRequestSerializer),
    TEXT: sharing_bound_fields(CompletionRequestSerializer),
}
# OpenAI's defaults where neither the request nor the model's defaults say otherwise; legacy
# completions stop at 16 tokens unless told otherwise, chat at the end of the context.
_SAMPLING_DEFAULTS = {
    CHAT: {"temperature": 1.0, "top_p": 1.0},
    TEXT: {"temperature": 1.0, "top_p": 1.0, "max_tokens": 16},
}


def validated_body(kind: str, data) -> dict:
    """The body after the endpoint's serializer (400 naming the field otherwise)."""
    serializer = _SERIALIZERS[kind](data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def wants_logprobs(kind: str, body: dict) -> bool:
    """Chat asks with `logprobs: true`; legacy completions with any `logprobs` count, 0 included."""
    return body.get("logprobs") is True if kind == CHAT else body.get("logprobs") is not None


def _wants_format(response_format) -> bool:
    """Whether the request asks for anything but plain text output."""
    if response_format is None:
        return False
    if isinstance(response_format, dict):
        return response_format.get("type", "text") != "text"
    return True


def output_format(body: dict) -> OutputFormat | None:
    """What the output must be: `response_format` (validated by the serializer) or a raw GBNF `grammar`."""
    if body.get("grammar") is not None:
        return OutputFormat(kind="grammar", grammar=body["grammar"])
    response_format: dict = body.get("response_format") or {}
    if not _wants_format(response_format):
        return None
    if response_format["type"] == "json_object":
        return OutputFormat(kind="json_object")
    spec = response_format["json_schema"]
    return OutputFormat(kind="json_schema", schema=spec["schema"], name=spec["name"])


def features_used(kind: str, body: dict) -> dict[str, str]:
    """The engine features (engines.capabilities) the body uses, each with the parameter that asks for it."""
    wanted = {
        "streaming": ("stream", bool(body.get("stream"))),
        "stop": ("stop", bool(body.get("stop"))),
        "seed": ("seed", body.get("seed") is not None),
        "n": ("n", (body.get("n") or 1) > 1),
        "logprobs": ("logprobs", wants_logprobs(kind, body)),
        "logit_bias": ("logit_bias", bool(body.get("logit_bias"))),
        "tools": (
            "tools",
            bool(body.get("tools"))
            or _tool_choice(body)[0] not in ("none", "auto")
            or any(m.get("tool_calls") or m["role"] == "tool" for m in body.get("messages", [])),
        ),
        "response_format": ("response_format", _wants_format(body.get("response_format"))),
        "grammar": ("grammar", body.get("grammar") is not None),
    }
    return {feature: param for feature, (param, used) in wanted.items() if used}


def refuse_unsupported_options(kind: str, body: dict, engine: str) -> None:
    """Options of OpenAI's API that no engine here implements (400 naming the parameter)."""
    if body.get("best_of") not in (None, body.get("n") or 1):
        raise UnsupportedParameter("'best_of' is not supported (other than equal to n).", param="best_of")
    if kind != CHAT and (body.get("echo") or body.get("suffix")):
        param = "echo" if body.get("echo") else "suffix"
        raise UnsupportedParameter(f"'{param}' is not supported by the {engine} engine.", param=param)


def generation_request(kind: str, body: dict, model: ServedModel, request_id: str, *, tenant: str) -> GenerationRequest:
    """The engine's request; `tenant` (the key) is whom a model's queue serves round-robin."""
    defaults = {**_SAMPLING_DEFAULTS[kind], **(model.default_params or {})}

    def pick(name):
        value = body.get(name)
        return value if value is not None else defaults.get(name)

    stop = body.get("stop") or defaults.get("stop") or ()  # a string is one sequence, never split
    sampling = SamplingParams(
        max_tokens=pick("max_tokens"),
        temperature=pick("temperature"),
        top_p=pick("top_p"),
        stop=tuple([stop] if isinstance(stop, str) else stop),
        seed=pick("seed"),
        presence_penalty=pick("presence_penalty") or 0.0,
        frequency_penalty=pick("frequency_penalty") or 0.0,
        n=body.get("n") or 1,
        logprobs=wants_logprobs(kind, body),
        top_logprobs=(body.get("top_logprobs") if kind == CHAT else body.get("logprobs")) or 0,
        logit_bias=body.get("logit_bias") or (),
    )
    if kind == CHAT:
        choice, forced = _tool_choice(body)
        return GenerationRequest(
            request_id=request_id,
            sampling=sampling,
            messages=tuple(_message(m) for m in body["messages"]),
            tenant=tenant,
            tools=tuple(_tool_spec(tool["function"]) for tool in body.get("tools") or ()),
            tool_choice=cast(ToolChoice, choice),
            forced_tool=forced,
            parallel_tool_calls=body.get("parallel_tool_calls") is not False,
            output_format=output_format(body),
        )
    return GenerationRequest(
        request_id=request_id,
        sampling=sampling,
        prompt=body["prompt"],
        tenant=tenant,
        output_format=output_format(body),
    )


def _tool_choice(body: dict) -> tuple[str, str | None]:
    """The validated tool_choice; unset means "auto" (with no tools nothing is offered either way)."""
    return body.get("tool_choice") or ("auto", None)


def _tool_spec(function: dict) -> ToolSpec:
    return ToolSpec(name=function["name"], description=function["description"], parameters=function["parameters"])


def _message(message: dict) -> dict:
    """A message in the engines' shape (OpenAI's): role, content (never None), and the tool fields it has."""
    # The serializer turns null content into ""; `or` keeps a None from reaching any engine.
    ready = {"role": message["role"], "content": message.get("content") or ""}
    if message.get("tool_calls"):
        ready["tool_calls"] = [
            {"id": call["id"], "type": "function", "function": dict(call["function"])} for call in message["tool_calls"]
        ]
    if message.get("tool_call_id"):
        ready["tool_call_id"] = message["tool_call_id"]
    return ready
