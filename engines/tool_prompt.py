"""Chat messages and tools made into what a chat template can render.

A GGUF chat template that reads `tools` (Qwen 2.5, Llama 3.1, Hermes and the like) gets
them in the shape Hugging Face templates expect, and renders past calls and results itself.
Any other template (SmolLM2's plain ChatML among them) gets the generic tool prompt: a
section of the system message that lists the functions and says how to call one
(Hermes-style `<tool_call>` tags, which engines.tool_calls parses), with past calls and
results written out as text such a template can show.

With tool_choice "none" the tools are not offered at all; past calls and results still render.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from typing import Any

from .base import GenerationRequest, ToolSpec

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"

GENERIC_TOOLS_HEADER = """# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{tools}
</tools>"""
GENERIC_HOW_TO_CALL = """For each function call, return a json object with function name and arguments within \
<tool_call></tool_call> XML tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call>"""
GENERIC_ONE_CALL = "Call at most one function."
# Forced calls are sampled under a grammar that admits only the bare JSON object.
GENERIC_FORCED_CALL = """You must call {which} now. Answer with only the JSON object of the call:
{{"name": <function-name>, "arguments": <args-json-object>}}"""


@dataclasses.dataclass(frozen=True)
class ChatInput:
    """What to render: the messages, and `tools` for a template that reads them (else None)."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None


def offers_tools(request: GenerationRequest) -> bool:
    """Whether the model is told about tools (and its output parsed for calls)."""
    return bool(request.tools) and request.tool_choice != "none"


@functools.lru_cache(maxsize=16)
def template_reads_tools(template: str) -> bool:
    """Whether a Jinja chat template uses a `tools` variable (and so renders tools itself)."""
    import jinja2
    from jinja2 import meta

    try:
        # Only parsed here, never rendered: escaping does not matter, the linter wants it on.
        parsed = jinja2.Environment(extensions=["jinja2.ext.loopcontrols"], autoescape=True).parse(template)
    except jinja2.TemplateError:
        # Tags only the renderer knows (Hugging Face's `generation`): read it as text instead.
        return re.search(r"\btools\b", template) is not None
    return "tools" in meta.find_undeclared_variables(parsed)


def chat_input(request: GenerationRequest, *, template: str) -> ChatInput:
    """The request's messages ready for `template`, with its tools offered as the template can take them."""
    messages = list(request.messages or ())
    offered = offers_tools(request)
    has_history = any(m.get("tool_calls") or m.get("role") == "tool" for m in messages)
    if not offered and not has_history:
        return ChatInput(messages)
    if template_reads_tools(template):
        return ChatInput(
            [_with_argument_objects(m) for m in messages],
            [openai_tool(tool) for tool in request.tools] if offered else None,
        )
    text_history = _history_as_text(messages)
    if not offered:
        return ChatInput(text_history)
    return ChatInput(_with_system_section(text_history, generic_tool_section(request)))


def openai_tool(tool: ToolSpec) -> dict[str, Any]:
    """A tool in OpenAI's request shape, as templates and the generic prompt list it."""
    function: dict[str, Any] = {"name": tool.name}
    if tool.description:
        function["description"] = tool.description
    function["parameters"] = tool.parameters
    return {"type": "function", "function": function}


def generic_tool_section(request: GenerationRequest) -> str:
    """The system-message section offering the request's tools to a template that knows none."""
    listed = "\n".join(json.dumps(openai_tool(tool), ensure_ascii=False) for tool in request.tools)
    parts = [GENERIC_TOOLS_HEADER.replace("{tools}", listed)]
    if request.tool_choice == "function":
        parts.append(GENERIC_FORCED_CALL.format(which=f"the function `{request.forced_tool}`"))
    elif request.tool_choice == "required":
        parts.append(GENERIC_FORCED_CALL.format(which="one of these functions"))
    else:
        parts.append(GENERIC_HOW_TO_CALL)
        if not request.parallel_tool_calls:
            parts.append(GENERIC_ONE_CALL)
    return "\n\n".join(parts)


def _with_system_section(messages: list[dict[str, Any]], section: str) -> list[dict[str, Any]]:
    """`section` appended to the leading system message, or as a system message of its own."""
    if messages and messages[0].get("role") == "system":
        first = messages[0]
        content = first.get("content") or ""
        return [{**first, "content": f"{content}\n\n{section}" if content else section}, *messages[1:]]
    return [{"role": "system", "content": section}, *messages]


def _arguments_value(arguments: Any) -> Any:
    """A call's arguments as a JSON value: OpenAI sends a JSON string, templates want the object."""
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments


def _with_argument_objects(message: dict[str, Any]) -> dict[str, Any]:
    """An assistant message whose calls carry their arguments as objects, as HF templates expect."""
    calls = message.get("tool_calls")
    if not calls:
        return message
    ready = []
    for call in calls:
        function = dict(call.get("function") or {})
        function["arguments"] = _arguments_value(function.get("arguments"))
        ready.append({**call, "function": function})
    return {**message, "tool_calls": ready}


def call_text(name: str, arguments: Any) -> str:
    """One call as the generic prompt asks the model to write it."""
    call = {"name": name, "arguments": _arguments_value(arguments)}
    return f"{TOOL_CALL_OPEN}\n{json.dumps(call, ensure_ascii=False)}\n{TOOL_CALL_CLOSE}"


def _history_as_text(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Past calls written into their assistant turn; tool results as a user turn of
    `<tool_response>` blocks (consecutive results in one turn, so roles still alternate)."""
    ready: list[dict[str, Any]] = []
    after_result = False
    for message in messages:
        if message.get("role") == "tool":
            block = f"<tool_response>\n{message.get('content') or ''}\n</tool_response>"
            if after_result:
                ready[-1]["content"] += "\n" + block
            else:
                ready.append({"role": "user", "content": block})
            after_result = True
            continue
        after_result = False
        calls = message.get("tool_calls")
        texts = [message.get("content") or ""]
        for call in calls or ():
            function = call.get("function") or {}
            texts.append(call_text(str(function.get("name", "")), function.get("arguments")))
        ready.append(
            {
                **{k: v for k, v in message.items() if k not in ("tool_calls", "tool_call_id")},
                "content": "\n".join(t for t in texts if t),
            }
        )
    return ready
