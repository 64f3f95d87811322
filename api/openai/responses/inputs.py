"""A Responses request's input into the engine's request: items into chat messages, tools, text format.

Input items are normalised to one stored form (each with an id) so that a stored conversation
can be read back (`input_items`) and continued (`previous_response_id`) through the same code.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from engines.base import GenerationRequest, OutputFormat, SamplingParams, ToolChoice, ToolSpec
from models_registry.models import ServedModel
from serving.errors import InvalidValue, UnsupportedParameter

_ROLES = ("user", "assistant", "system", "developer")
_FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # OpenAI's rule for function names
_TEXT_PARTS = ("input_text", "output_text", "text")
# Only these are named back in an error, never a client's own string (errors are recorded).
_KNOWN_TYPES = (
    "input_image",
    "input_file",
    "input_audio",
    "refusal",
    "reasoning",
    "item_reference",
    "file_search_call",
    "web_search_call",
    "computer_call",
    "computer_call_output",
    "image_generation_call",
    "code_interpreter_call",
    "local_shell_call",
    "mcp_call",
    "custom_tool_call",
    "web_search",
    "web_search_preview",
    "file_search",
    "computer_use_preview",
    "code_interpreter",
    "image_generation",
    "mcp",
    "local_shell",
    "custom",
    "allowed_tools",
)


def new_id(prefix: str) -> str:
    """An OpenAI-style object id: `resp_...`, `msg_...`, `fc_...`."""
    return f"{prefix}_{uuid.uuid4().hex}"


def _named(kind: str, value: object) -> str:
    return f"{kind} {value!r}" if value in _KNOWN_TYPES else f"This {kind}"


def _text_of(content: object, param: str) -> str:
    """A message's (or a function output's) text: a string, or the concatenated text parts."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidValue(f"Invalid value for '{param}': must be a string or a list of content parts.", param=param)
    texts = []
    for index, part in enumerate(content):
        where = f"{param}[{index}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise InvalidValue(f"Invalid value for '{where}': each part must be an object with a 'type'.", param=where)
        if part["type"] not in _TEXT_PARTS:
            raise UnsupportedParameter(
                f"{_named('Content part type', part['type'])} is not supported; only text parts are.", param=where
            )
        if not isinstance(part.get("text"), str):
            raise InvalidValue(f"Invalid value for '{where}.text': must be a string.", param=f"{where}.text")
        texts.append(part["text"])
    return "".join(texts)


def _string(item: dict, key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidValue(f"Invalid value for '{where}.{key}': must be a non-empty string.", param=f"{where}.{key}")
    return value


def normalized_items(value: object) -> list[dict[str, Any]]:
    """The request's `input` as stored items (400 naming the item at fault otherwise).

    Messages keep their text as one part (`input_text`, or `output_text` for the assistant's);
    extra keys a client copies from an earlier response's output (status, annotations) are dropped.
    """
    if isinstance(value, str):
        value = [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise InvalidValue("Invalid value for 'input': must be a string or a non-empty list of items.", param="input")
    items = []
    for index, item in enumerate(value):
        where = f"input[{index}]"
        if not isinstance(item, dict):
            raise InvalidValue(f"Invalid value for '{where}': each item must be an object.", param=where)
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in _ROLES:
                raise InvalidValue(
                    f"Invalid value for '{where}.role': must be one of: {', '.join(_ROLES)}.", param=f"{where}.role"
                )
            text = _text_of(item.get("content"), f"{where}.content")
            part = "output_text" if role == "assistant" else "input_text"
            items.append(
                {
                    "type": "message",
                    "id": new_id("msg"),
                    "role": role,
                    "content": [{"type": part, "text": text, **({"annotations": []} if role == "assistant" else {})}],
                }
            )
        elif kind == "function_call":
            arguments = item.get("arguments")
            if not isinstance(arguments, str):
                raise InvalidValue(
                    f"Invalid value for '{where}.arguments': must be a string.", param=f"{where}.arguments"
                )
            items.append(
                {
                    "type": "function_call",
                    "id": new_id("fc"),
                    "call_id": _string(item, "call_id", where),
                    "name": _string(item, "name", where),
                    "arguments": arguments,
                }
            )
        elif kind == "function_call_output":
            output = _text_of(item.get("output"), f"{where}.output")
            call_id = _string(item, "call_id", where)
            items.append({"type": "function_call_output", "id": new_id("fco"), "call_id": call_id, "output": output})
        else:
            raise UnsupportedParameter(
                f"{_named('Input item type', kind)} is not supported; only message, function_call and "
                "function_call_output items are.",
                param=f"{where}.type",
            )
    return items


def chat_messages(instructions: str | None, items: list[dict[str, Any]]) -> tuple[dict[str, Any], ...]:
    """Stored items as chat messages (OpenAI's chat shape), `instructions` first as the system message.

    A function call joins the assistant message just before it, as chat's `tool_calls` do.
    """
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    for item in items:
        if item["type"] == "message":
            messages.append({"role": item["role"], "content": "".join(part["text"] for part in item["content"])})
        elif item["type"] == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            if not (messages and messages[-1]["role"] == "assistant"):
                messages.append({"role": "assistant", "content": ""})
            messages[-1].setdefault("tool_calls", []).append(call)
        else:
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]})
    return tuple(messages)


def tool_specs(tools: object) -> tuple[ToolSpec, ...]:
    """Responses' flat function tools as ToolSpecs; anything else is a 400 naming it."""
    if tools is None:
        return ()
    if not isinstance(tools, list):
        raise InvalidValue("Invalid value for 'tools': must be a list of tools.", param="tools")
    specs: list[ToolSpec] = []
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        if not isinstance(tool, dict):
            raise InvalidValue(f"Invalid value for '{where}': each tool must be an object.", param=where)
        if tool.get("type") != "function":
            raise UnsupportedParameter(
                f"{_named('Tool type', tool.get('type'))} is not supported; only function tools are.", param=where
            )
        parameters = tool.get("parameters")
        description = tool.get("description")
        if parameters is not None and not isinstance(parameters, dict):
            raise InvalidValue(
                f"Invalid value for '{where}.parameters': must be a JSON schema object.", param=f"{where}.parameters"
            )
        if description is not None and not isinstance(description, str):
            raise InvalidValue(
                f"Invalid value for '{where}.description': must be a string.", param=f"{where}.description"
            )
        name = _string(tool, "name", where)
        if not _FUNCTION_NAME.fullmatch(name) or name in {spec.name for spec in specs}:
            raise InvalidValue(
                f"Invalid value for '{where}.name': function names are 1-64 letters, digits, '_' or '-', "
                "each used once.",
                param=f"{where}.name",
            )
        extra = {} if parameters is None else {"parameters": parameters}
        specs.append(ToolSpec(name=name, description=description or "", **extra))
    return tuple(specs)


def tool_choice(value: object, tools: tuple[ToolSpec, ...]) -> tuple[ToolChoice, str | None]:
    """`tool_choice` as the engine's choice and forced function name."""
    if value is None:
        return "auto", None
    if value == "required" and not tools:
        raise InvalidValue("Invalid value for 'tool_choice': 'required' needs 'tools'.", param="tool_choice")
    if value in ("none", "auto", "required"):
        return value, None
    if isinstance(value, dict) and value.get("type") == "function":
        name = value.get("name")
        if not isinstance(name, str) or name not in {tool.name for tool in tools}:
            raise InvalidValue(
                "Invalid value for 'tool_choice': the function it names is not in 'tools'.", param="tool_choice"
            )
        return "function", name
    kind = value.get("type") if isinstance(value, dict) else None
    if kind in _KNOWN_TYPES:
        raise UnsupportedParameter(f"tool_choice of type {kind!r} is not supported.", param="tool_choice")
    raise InvalidValue(
        "Invalid value for 'tool_choice': must be none, auto, required or a named function.", param="tool_choice"
    )


def output_format(text: object) -> OutputFormat | None:
    """`text.format` as the engine's OutputFormat; None for plain text."""
    if text is None:
        return None
    if not isinstance(text, dict):
        raise InvalidValue("Invalid value for 'text': must be an object.", param="text")
    unknown = set(text) - {"format", "verbosity"}
    if unknown:
        raise InvalidValue("Invalid value for 'text': only 'format' is supported.", param="text")
    if text.get("verbosity") not in (None, "medium"):
        raise UnsupportedParameter("The 'text.verbosity' parameter is not supported.", param="text.verbosity")
    fmt = text.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return OutputFormat(kind="json_object")
    if kind == "json_schema":
        schema, name = fmt.get("schema"), fmt.get("name", "")
        if not isinstance(schema, dict):
            raise InvalidValue(
                "Invalid value for 'text.format.schema': must be a JSON schema object.", param="text.format.schema"
            )
        if not isinstance(name, str):
            raise InvalidValue("Invalid value for 'text.format.name': must be a string.", param="text.format.name")
        return OutputFormat(kind="json_schema", schema=schema, name=name)
    raise InvalidValue(
        "Invalid value for 'text.format': its type must be text, json_object or json_schema.", param="text.format"
    )


def features_used(
    body: dict, items: list[dict[str, Any]], tools: tuple[ToolSpec, ...], fmt: OutputFormat | None
) -> dict[str, str]:
    """The engine features (engines.capabilities) the request uses, each with the parameter asking for it."""
    wanted = {
        "streaming": ("stream", bool(body.get("stream"))),
        "tools": (
            "tools",
            bool(tools)
            or body.get("tool_choice") not in (None, "none", "auto")
            or any(item["type"] != "message" for item in items),
        ),
        "response_format": ("text.format", fmt is not None),
    }
    return {feature: param for feature, (param, used) in wanted.items() if used}


def generation_request(
    body: dict,
    *,
    messages: tuple[dict[str, Any], ...],
    tools: tuple[ToolSpec, ...],
    choice: tuple[ToolChoice, str | None],
    fmt: OutputFormat | None,
    model: ServedModel,
    request_id: str,
    tenant: str,
) -> GenerationRequest:
    """The engine's request (`choice` is tool_choice's answer); sampling falls back on the model's defaults, then OpenAI's."""
    defaults = {"temperature": 1.0, "top_p": 1.0, **(model.default_params or {})}

    def pick(name: str, default_name: str | None = None) -> Any:
        value = body.get(name)
        return value if value is not None else defaults.get(default_name or name)

    sampling = SamplingParams(
        max_tokens=pick("max_output_tokens", "max_tokens"),
        temperature=pick("temperature"),
        top_p=pick("top_p"),
        stop=(stop,) if isinstance(stop := defaults.get("stop") or (), str) else tuple(stop),
        seed=defaults.get("seed"),
        presence_penalty=defaults.get("presence_penalty") or 0.0,
        frequency_penalty=defaults.get("frequency_penalty") or 0.0,
    )
    return GenerationRequest(
        request_id=request_id,
        sampling=sampling,
        messages=messages,
        tenant=tenant,
        tools=tools,
        tool_choice=choice[0],
        forced_tool=choice[1],
        parallel_tool_calls=body.get("parallel_tool_calls") is not False,
        output_format=fmt,
    )
