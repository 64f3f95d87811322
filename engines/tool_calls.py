"""Tool calls out of generated text, as a stream of chunks.

Engines that write the model's text themselves (llama.cpp, echo) pass their chunks through
`parsed_tool_calls` when a request offers tools. Text comes out as text, calls as
ToolCallDeltas (engines.base), and a choice that called a function ends with
finish_reason "tool_calls" (unless it ran out of tokens: then "length" stays).

- tool_choice "auto": calls are `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`
  blocks, as the generic tool prompt (engines.tool_prompt) and Hermes-style templates ask.
  Text that may be the start of a tag is held back, like a stop string. A whole answer that
  is nothing but one call's JSON is a call too. A block that is not a call to one of the
  request's functions stays text. Each call is sent whole once its block closes.
- "required" and a named function: the output is sampled under `forced_tool_format`'s
  schema, so it is one call's JSON object, name first. Its id and name go out as soon as the
  name is complete, then its arguments fragment by fragment as they are generated.

One call at most is forced, whatever parallel_tool_calls says (OpenAI's "at least one" is
met by one). With parallel_tool_calls false, "auto" keeps only the first call.
"""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Protocol

from .base import Chunk, FinishReason, GenerationRequest, OutputFormat, ToolCallDelta, ToolSpec
from .tool_prompt import TOOL_CALL_CLOSE, TOOL_CALL_OPEN


def new_call_id() -> str:
    """A fresh tool call id, in OpenAI's `call_...` style."""
    return f"call_{uuid.uuid4().hex[:24]}"


# --- Forced calls: the schema the sampler holds the output to --------------------------------


def forced_tools(request: GenerationRequest) -> tuple[ToolSpec, ...]:
    """The functions a forced call may name: all of them ("required") or the named one."""
    if request.tool_choice == "function":
        return tuple(tool for tool in request.tools if tool.name == request.forced_tool)
    return request.tools if request.tool_choice == "required" else ()


def forced_tool_format(request: GenerationRequest) -> OutputFormat:
    """A JSON schema that admits exactly one call to a function the request forces.

    Each alternative is `{"name": <const>, "arguments": <the function's parameters>}`, name
    first: grammars built from a schema write properties in its order, so the name comes
    out before the arguments and can be streamed as soon as it is known. Definitions
    (`$defs`) of the parameters move to the root, where their references point.
    """
    tools = forced_tools(request)
    if not tools:
        raise ValueError("forced_tool_format needs tool_choice 'required' or a function the request has")
    alternatives, definitions = [], {}
    for tool in tools:
        # Several functions may each define a name of their own: prefix them when more than one.
        prefix = f"{tool.name}." if len(tools) > 1 else ""
        parameters, own = _hoisted_definitions(tool.parameters, prefix)
        definitions.update(own)
        alternatives.append(
            {
                "type": "object",
                "properties": {"name": {"const": tool.name}, "arguments": parameters},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    schema: dict[str, Any] = alternatives[0] if len(alternatives) == 1 else {"anyOf": alternatives}
    if definitions:
        schema = {**schema, "$defs": definitions}
    return OutputFormat(kind="json_schema", schema=schema, name="tool_call")


def _hoisted_definitions(parameters: dict[str, Any], prefix: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """`parameters` without its `$defs`/`definitions`, references renamed with `prefix`; and those definitions."""
    defs = {**parameters.get("definitions", {}), **parameters.get("$defs", {})}
    if not defs:
        return parameters, {}
    body = {k: v for k, v in parameters.items() if k not in ("$defs", "definitions")}

    def renamed(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: renamed(v) for k, v in node.items()}
            ref = node.get("$ref")
            if isinstance(ref, str):
                for root in ("#/$defs/", "#/definitions/"):
                    if ref.startswith(root):
                        out["$ref"] = "#/$defs/" + prefix + ref[len(root) :]
            return out
        if isinstance(node, list):
            return [renamed(item) for item in node]
        return node

    return renamed(body), {prefix + name: renamed(schema) for name, schema in defs.items()}


# --- Parsing the text into calls ---------------------------------------------------------------


class CallParser(Protocol):
    """Turns one choice's text, delta by delta, into text and tool-call pieces."""

    calls: int

    def feed(self, text: str) -> tuple[str, list[ToolCallDelta]]:
        """Text safe to send now, and call pieces completed by `text`."""

    def finish(self) -> tuple[str, list[ToolCallDelta]]:
        """What was held back, once the choice has ended."""


def whole_call(index: int, name: str, arguments: Any) -> list[ToolCallDelta]:
    """A complete call as OpenAI streams one: id and name first, then its arguments."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return [ToolCallDelta(call=index, id=new_call_id(), name=name), ToolCallDelta(call=index, arguments=text)]


def call_of(text: str, names: frozenset[str]) -> tuple[str, Any] | None:
    """The (name, arguments) of a call written as JSON, if `text` is one to a known function.

    Arguments may be an object or a JSON string holding one; Llama-style "parameters" is
    read as "arguments"; a call without any has none ({}).
    """
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict) or value.get("name") not in names:
        return None
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    if not isinstance(arguments, dict):
        return None
    return value["name"], arguments


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that starts `tag` (text to hold back)."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


class TaggedCallParser:
    """tool_choice "auto": `<tool_call>` blocks, or an answer that is one bare JSON call."""

    def __init__(self, names: frozenset[str], *, parallel: bool = True):
        self.names = names
        self.parallel = parallel
        self.calls = 0
        self._pending = ""  # held back: a possible tag start, a block's inside, or a leading JSON object
        self._in_block = False
        self._started = False  # whether any non-space text was seen (a bare call must be all of it)
        self._bare = False

    def feed(self, text: str) -> tuple[str, list[ToolCallDelta]]:
        self._pending += text
        if not self._started:
            stripped = self._pending.lstrip()
            if not stripped:
                return "", []
            self._started = True
            self._bare = stripped.startswith("{")
        if self._bare:
            return self._feed_bare()
        return self._scan()

    def finish(self) -> tuple[str, list[ToolCallDelta]]:
        text, self._pending = self._pending, ""
        if self._bare:
            call = call_of(text, self.names)
            return ("", self._made(*call)) if call is not None else (text, [])
        if self._in_block:
            # The model ended inside a block: keep a complete call all the same.
            call = call_of(text[len(TOOL_CALL_OPEN) :], self.names)
            if call is not None:
                return "", self._made(*call)
        return text, []

    def _feed_bare(self) -> tuple[str, list[ToolCallDelta]]:
        """Hold a leading JSON object until the end; once more text follows it, it was text."""
        if "}" not in self._pending:
            return "", []
        try:
            _, end = json.JSONDecoder().raw_decode(self._pending.lstrip())
        except ValueError:
            return "", []
        leading = len(self._pending) - len(self._pending.lstrip())
        if not self._pending[leading + end :].strip():
            return "", []
        self._bare = False  # an object with more after it: an answer, not a call
        return self._scan()

    def _scan(self) -> tuple[str, list[ToolCallDelta]]:
        out: list[str] = []
        deltas: list[ToolCallDelta] = []
        while True:
            if self._in_block:
                end = self._pending.find(TOOL_CALL_CLOSE)
                if end < 0:
                    break
                block = self._pending[: end + len(TOOL_CALL_CLOSE)]
                self._pending = self._pending[end + len(TOOL_CALL_CLOSE) :]
                self._in_block = False
                call = call_of(block[len(TOOL_CALL_OPEN) : -len(TOOL_CALL_CLOSE)], self.names)
                if call is None:
                    out.append(block)  # not a call to any of the functions: the model's text
                else:
                    deltas.extend(self._made(*call))
                continue
            start = self._pending.find(TOOL_CALL_OPEN)
            if start < 0:
                hold = _partial_suffix(self._pending, TOOL_CALL_OPEN)
                out.append(self._pending[: len(self._pending) - hold])
                self._pending = self._pending[len(self._pending) - hold :]
                break
            out.append(self._pending[:start])
            self._pending = self._pending[start:]
            self._in_block = True
        return "".join(out), deltas

    def _made(self, name: str, arguments: Any) -> list[ToolCallDelta]:
        if self.calls and not self.parallel:
            return []  # parallel_tool_calls false: the first call is the answer
        self.calls += 1
        return whole_call(self.calls - 1, name, arguments)


_NAME = re.compile(r'\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")')
_ARGUMENTS_KEY = re.compile(r'\s*,\s*"arguments"\s*:\s*')


class ForcedCallParser:
    """tool_choice "required" or a function: one call's JSON object (`forced_tool_format`),
    streamed as it is generated. Output that is not such an object stays text."""

    def __init__(self) -> None:
        self.calls = 0
        self._pending = ""
        self._stage = "name"  # then "key" (before the arguments), "arguments", "done"; or "text"
        self._depth = 0
        self._in_string = False
        self._escaped = False

    def feed(self, text: str) -> tuple[str, list[ToolCallDelta]]:
        if self._stage == "text":
            return text, []
        self._pending += text
        deltas: list[ToolCallDelta] = []
        if self._stage == "name":
            if self._pending.strip() and not self._pending.lstrip().startswith("{"):
                self._stage, text, self._pending = "text", self._pending, ""
                return text, []
            match = _NAME.match(self._pending)
            if match is None:
                return "", []
            self.calls = 1
            deltas.append(ToolCallDelta(call=0, id=new_call_id(), name=json.loads(match.group(1))))
            self._pending, self._stage = self._pending[match.end() :], "key"
        if self._stage == "key":
            match = _ARGUMENTS_KEY.match(self._pending)
            if match is None:
                return "", deltas
            self._pending, self._stage = self._pending[match.end() :], "arguments"
        if self._stage == "arguments":
            fragment = self._arguments_fragment()
            if fragment:
                deltas.append(ToolCallDelta(call=0, arguments=fragment))
        return "", deltas

    def finish(self) -> tuple[str, list[ToolCallDelta]]:
        if self._stage == "name":  # no call began: whatever came is text
            text, self._pending = self._pending, ""
            return text, []
        return "", []

    def _arguments_fragment(self) -> str:
        """The held text up to where the arguments' JSON value closes (the rest is the call's `}`)."""
        if self._depth == 0 and not self._in_string:
            self._pending = self._pending.lstrip()  # the space before the value is the call's, not its
        for position, char in enumerate(self._pending):
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif char == "\\":
                    self._escaped = True
                elif char == '"':
                    self._in_string = False
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
            elif char in "}]":
                self._depth -= 1
            if self._depth == 0 and not self._in_string:
                fragment = self._pending[: position + 1]
                self._pending, self._stage = "", "done"
                return fragment
        fragment, self._pending = self._pending, ""
        return fragment


def call_parser(request: GenerationRequest) -> CallParser:
    """The parser for one choice of `request` (which offers tools)."""
    if request.tool_choice in ("required", "function"):
        return ForcedCallParser()
    return TaggedCallParser(frozenset(tool.name for tool in request.tools), parallel=request.parallel_tool_calls)


async def parsed_tool_calls(chunks: AsyncIterator[Chunk], request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
    """An engine's chunks with the calls in their text turned into ToolCallDeltas, per choice.

    Token ids and logprobs stay on the chunk that brought them, even while its text is held
    back. Closing this closes nothing: the caller closes `chunks`.
    """
    parsers: dict[int, CallParser] = {}

    def parser_of(index: int) -> CallParser:
        if index not in parsers:
            parsers[index] = call_parser(request)
        return parsers[index]

    async for chunk in chunks:
        text, deltas = parser_of(chunk.index).feed(chunk.text)
        if chunk.finish_reason is None:
            yield dataclasses.replace(chunk, text=text, tool_calls=tuple(deltas))
            continue
        # The last chunk of the request: every choice has ended, so what each held back is final.
        for index in range(request.sampling.n):
            if index == chunk.index:
                continue
            rest, more = parser_of(index).finish()
            if rest or more:
                yield Chunk(text=rest, tool_calls=tuple(more), index=index)
        rest, more = parser_of(chunk.index).finish()
        yield dataclasses.replace(
            chunk, text=text + rest, tool_calls=(*deltas, *more), **_finish_fields(chunk, parsers)
        )
        return


def _finish_fields(final: Chunk, parsers: dict[int, CallParser]) -> dict[str, Any]:
    """The final chunk's finish reasons, "tool_calls" for each choice that stopped after calling."""

    def reason(index: int, given: FinishReason) -> FinishReason:
        parser = parsers.get(index)
        return "tool_calls" if given == "stop" and parser is not None and parser.calls else given

    if not final.finish_reasons:
        given = final.finish_reason
        return {"finish_reason": given and reason(final.index, given)}
    reasons = tuple(reason(index, given) for index, given in enumerate(final.finish_reasons))
    return {"finish_reason": reasons[0], "finish_reasons": reasons}
