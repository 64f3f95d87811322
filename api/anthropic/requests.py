"""Anthropic Messages bodies into the platform's request: validation, chat messages in OpenAI's shape, features used.

Every protocol is parsed into one GenerationRequest whose messages have OpenAI's chat shape, so
an Anthropic conversation becomes: the system prompt first, each `tool_use` block an assistant
tool call, each `tool_result` block a `tool` message, and text blocks plain content.
"""

from __future__ import annotations

import json
from typing import Any

from engines.base import GenerationRequest, OutputFormat, SamplingParams, ToolChoice, ToolSpec
from models_registry.models import ServedModel

from ..shared_serializers import sharing_bound_fields
from .serializers import CountTokensRequestSerializer, MessagesRequestSerializer

_MESSAGES = sharing_bound_fields(MessagesRequestSerializer)
_COUNT_TOKENS = sharing_bound_fields(CountTokensRequestSerializer)
# Anthropic's tool_choice types, as the engine contract names them.
_TOOL_CHOICE: dict[str, ToolChoice] = {"auto": "auto", "any": "required", "tool": "function", "none": "none"}
# Anthropic's default temperature, where neither the request nor the model's defaults say.
_SAMPLING_DEFAULTS = {"temperature": 1.0, "top_p": 1.0}
# How a failed tool's result reads to the model: chat templates have no field for is_error.
ERROR_RESULT_PREFIX = "Error: "


def validated_body(data: object, *, count_tokens: bool = False) -> dict:
    """The body after its serializer (400 naming the field otherwise)."""
    serializer = (_COUNT_TOKENS if count_tokens else _MESSAGES)(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def features_used(body: dict) -> dict[str, str]:
    """The engine features (engines.capabilities) the body uses, each with the parameter asking for it."""
    tool_blocks = any(
        block["type"] != "text" for message in body["messages"] for block in message["content"]
    )  # history with tool calls needs the engine's tool prompt too
    wanted = {
        "streaming": ("stream", bool(body.get("stream"))),
        "stop": ("stop_sequences", bool(body.get("stop_sequences"))),
        "tools": ("tools", bool(body.get("tools")) or tool_blocks),
        "response_format": ("output_config.format", _output_schema(body) is not None),
    }
    return {feature: param for feature, (param, used) in wanted.items() if used}


def _output_schema(body: dict) -> dict | None:
    output_format = (body.get("output_config") or {}).get("format")
    return output_format["schema"] if output_format else None


def chat_messages(body: dict) -> tuple[dict[str, Any], ...]:
    """The conversation in OpenAI's chat shape (role, content, tool_calls, tool_call_id), in order."""
    messages: list[dict[str, Any]] = []
    if body.get("system"):
        messages.append({"role": "system", "content": body["system"]})
    for message in body["messages"]:
        if message["role"] == "assistant":
            messages.append(_assistant_message(message["content"]))
        else:
            messages.extend(_user_messages(message["content"]))
    return tuple(messages)


def _assistant_message(blocks: list[dict]) -> dict[str, Any]:
    text = "".join(block["text"] for block in blocks if block["type"] == "text")
    calls = [
        {
            "id": block["id"],
            "type": "function",
            "function": {"name": block["name"], "arguments": json.dumps(block["input"], ensure_ascii=False)},
        }
        for block in blocks
        if block["type"] == "tool_use"
    ]
    return (
        {"role": "assistant", "content": text, "tool_calls": calls} if calls else {"role": "assistant", "content": text}
    )


def _user_messages(blocks: list[dict]) -> list[dict[str, Any]]:
    """Tool results become `tool` messages and text a user message, in the order the blocks come."""
    messages: list[dict[str, Any]] = []
    text: list[str] = []
    for block in blocks:
        if block["type"] == "text":
            text.append(block["text"])
            continue
        if text:
            messages.append({"role": "user", "content": "".join(text)})
            text = []
        result = ERROR_RESULT_PREFIX + block["text"] if block["is_error"] else block["text"]
        messages.append({"role": "tool", "tool_call_id": block["tool_use_id"], "content": result})
    if text or not messages:
        messages.append({"role": "user", "content": "".join(text)})
    return messages


def _tools(body: dict) -> dict[str, Any]:
    """The GenerationRequest's tool fields: the tools, the choice, the forced tool, parallel calls."""
    tools = tuple(
        ToolSpec(name=tool["name"], description=tool.get("description") or "", parameters=tool["input_schema"])
        for tool in body.get("tools") or ()
    )
    choice = body.get("tool_choice") or {"type": "auto"}
    return {
        "tools": tools,
        "tool_choice": _TOOL_CHOICE[choice["type"]] if tools else "none",
        "forced_tool": choice.get("name") if choice["type"] == "tool" else None,
        "parallel_tool_calls": not choice.get("disable_parallel_tool_use", False),
    }


def generation_request(body: dict, model: ServedModel, request_id: str, *, tenant: str) -> GenerationRequest:
    """The engine's request for a Messages body; `tenant` (the key) is whom a model's queue serves round-robin."""
    defaults = {**_SAMPLING_DEFAULTS, **(model.default_params or {})}

    def pick(name):
        value = body.get(name)
        return value if value is not None else defaults.get(name)

    sampling = SamplingParams(
        max_tokens=body["max_tokens"],
        temperature=pick("temperature"),
        top_p=pick("top_p"),
        stop=tuple(body.get("stop_sequences") or ()),
        seed=defaults.get("seed"),
    )
    schema = _output_schema(body)
    return GenerationRequest(
        request_id=request_id,
        sampling=sampling,
        messages=chat_messages(body),
        tenant=tenant,
        output_format=None if schema is None else OutputFormat(kind="json_schema", schema=schema),
        **_tools(body),
    )


def count_tokens_request(body: dict, request_id: str, *, tenant: str) -> GenerationRequest:
    """A tokenize job for the prompt a Messages request with this body would have (template and tools included)."""
    return GenerationRequest(
        request_id=request_id,
        sampling=SamplingParams(),
        messages=chat_messages(body),
        tenant=tenant,
        task="tokenize",
        **_tools(body),
    )
