"""Building Responses API objects: the response, its output items, and the events of a stream."""

from __future__ import annotations

import json
import time
from typing import Any, cast

from engines.base import Chunk
from serving.errors import ErrorInfo
from serving.outcome import Outcome, ToolCall

from .inputs import new_id
from .shapes import (
    DeletedResponse,
    EventType,
    OutputItem,
    OutputText,
    ResponseObject,
    ResponseStatus,
    ResponseStreamEvent,
    ResponseUsage,
)


def _usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int | None) -> ResponseUsage:
    return {
        "input_tokens": prompt_tokens,
        "input_tokens_details": {"cached_tokens": cached_tokens or 0},
        "output_tokens": completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _text_part(text: str) -> OutputText:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, text: str, status: str) -> OutputItem:
    """An assistant message output item holding one output_text part."""
    return cast(
        OutputItem,
        {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": [_text_part(text)]},
    )


def function_call_item(item_id: str, call: ToolCall, status: str) -> OutputItem:
    """A function_call output item; `call_id` is what a function_call_output answers."""
    return cast(
        OutputItem,
        {
            "type": "function_call",
            "id": item_id,
            "status": status,
            "call_id": call.id,
            "name": call.name,
            "arguments": call.arguments,
        },
    )


def status_of(finish_reason: str | None) -> ResponseStatus:
    """`incomplete` when the output ran into max_output_tokens (or the context's end)."""
    return "incomplete" if finish_reason == "length" else "completed"


def deleted_body(response_id: str) -> DeletedResponse:
    return {"id": response_id, "object": "response.deleted", "deleted": True}


class ResponseBuilder:
    """The response object of one request, from the request's echoed settings to its finished state."""

    def __init__(self, *, response_id: str, body: dict, temperature: float, top_p: float):
        self.response_id = response_id
        self.created_at = int(time.time())
        self._body = body
        self._temperature = temperature
        self._top_p = top_p

    def response(
        self,
        *,
        status: ResponseStatus,
        output: list[OutputItem] | None = None,
        usage: ResponseUsage | None = None,
        error: ErrorInfo | None = None,
    ) -> ResponseObject:
        """The response object in `status`; OpenAI's clients read every key, set or null."""
        body = self._body
        text = body.get("text") or {}
        return {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": None if error is None else {"code": error.code or error.type, "message": error.message},
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": body["model"],
            "output": output or [],
            "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None},
            "store": body.get("store") is not False,
            "temperature": self._temperature,
            "text": {"format": text.get("format") or {"type": "text"}},
            "tool_choice": body.get("tool_choice") or "auto",
            "tools": [_echoed_tool(tool) for tool in body.get("tools") or []],
            "top_p": self._top_p,
            "truncation": "disabled",
            "usage": usage,
            "user": body.get("user"),
            "metadata": body.get("metadata") or {},
        }

    def finished(self, outcome: Outcome) -> ResponseObject:
        """The whole response once the engine is done: a message with its text, then any function calls."""
        choice = outcome.choices[0]
        status = status_of(choice.finish_reason)
        output: list[OutputItem] = []
        if choice.text or not choice.tool_calls:
            output.append(message_item(new_id("msg"), choice.text, status))
        output.extend(function_call_item(new_id("fc"), call, "completed") for call in choice.tool_calls)
        usage = _usage(outcome.prompt_tokens, outcome.completion_tokens, outcome.cached_tokens)
        return self.response(status=status, output=output, usage=usage)


def _echoed_tool(tool: dict) -> dict[str, Any]:
    """A function tool as OpenAI echoes it: every key present."""
    return {
        "type": "function",
        "name": tool["name"],
        "description": tool.get("description"),
        "parameters": tool.get("parameters"),
        "strict": tool.get("strict") if tool.get("strict") is not None else True,
    }


def sse_event(event: ResponseStreamEvent) -> bytes:
    """One Server-Sent Event, named by its type as OpenAI's are."""
    return f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


class EventWriter:
    """The events of one streamed response, numbered in order, with the output items they open and close.

    Text opens a message item; a tool call's first piece closes whatever is open and opens a
    function_call item. `finish` closes the open item and ends with response.completed (or
    .incomplete); `fail` ends with response.failed.
    """

    def __init__(self, builder: ResponseBuilder):
        self.builder = builder
        self._sequence = 0
        self.output: list[OutputItem] = []
        self._open: OutputItem | None = None
        self._text: list[str] = []
        self._call: ToolCall | None = None
        self._call_number: int | None = None

    def _event(self, kind: EventType, **fields: Any) -> ResponseStreamEvent:
        event = cast(ResponseStreamEvent, {"type": kind, "sequence_number": self._sequence, **fields})
        self._sequence += 1
        return event

    def openings(self) -> list[ResponseStreamEvent]:
        """response.created and response.in_progress, with the response as it starts."""
        started = self.builder.response(status="in_progress")
        return [
            self._event("response.created", response=started),
            self._event("response.in_progress", response=started),
        ]

    def _open_message(self) -> list[ResponseStreamEvent]:
        item = message_item(new_id("msg"), "", "in_progress")
        item["content"] = []
        self._open, self._text = item, []
        index = len(self.output)
        return [
            self._event("response.output_item.added", output_index=index, item=item),
            self._event(
                "response.content_part.added",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part=_text_part(""),
            ),
        ]

    def _close(self, status: str) -> list[ResponseStreamEvent]:
        """Events that finish the open item, which then joins `output`."""
        item, index = self._open, len(self.output)
        if item is None:
            return []
        self._open = None
        if item["type"] == "message":
            text = "".join(self._text)
            done = message_item(item["id"], text, status)
            events = [
                self._event(
                    "response.output_text.done",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    text=text,
                    logprobs=[],
                ),
                self._event(
                    "response.content_part.done",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    part=_text_part(text),
                ),
            ]
        else:
            call = self._call or ToolCall(id="", name="")
            done = function_call_item(item["id"], call, "completed")
            events = [
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    arguments=call.arguments,
                )
            ]
        self.output.append(done)
        return [*events, self._event("response.output_item.done", output_index=index, item=done)]

    def _open_id(self) -> str:
        return self._open["id"] if self._open is not None else ""

    def chunk(self, chunk: Chunk) -> list[ResponseStreamEvent]:
        """Events for one engine chunk's text and tool-call pieces."""
        events: list[ResponseStreamEvent] = []
        if chunk.text:
            if self._open is None or self._open["type"] != "message":
                events += self._close("completed")
                events += self._open_message()
            self._text.append(chunk.text)
            events.append(
                self._event(
                    "response.output_text.delta",
                    item_id=self._open_id(),
                    output_index=len(self.output),
                    content_index=0,
                    delta=chunk.text,
                    logprobs=[],
                )
            )
        for delta in chunk.tool_calls:
            if delta.call != self._call_number:
                events += self._close("completed")
                self._call_number = delta.call
                self._call = ToolCall(id=delta.id or new_id("call"), name=delta.name or "")
                self._open = function_call_item(new_id("fc"), self._call, "in_progress")
                events.append(self._event("response.output_item.added", output_index=len(self.output), item=self._open))
            if delta.arguments and self._call is not None:
                self._call.arguments += delta.arguments
                events.append(
                    self._event(
                        "response.function_call_arguments.delta",
                        item_id=self._open_id(),
                        output_index=len(self.output),
                        delta=delta.arguments,
                    )
                )
        return events

    def finish(self, final: Chunk) -> tuple[list[ResponseStreamEvent], ResponseObject]:
        """The closing events and the finished response (for the store); the last event carries it."""
        status = status_of(final.finish_reason)
        events: list[ResponseStreamEvent] = []
        if not self.output and self._open is None:
            events += self._open_message()  # an empty answer is still one (empty) message
        events += self._close(status)
        usage = _usage(final.prompt_tokens or 0, final.completion_tokens or 0, final.cached_tokens)
        return events, self.builder.response(status=status, output=self.output, usage=usage)

    def ending(self, response: ResponseObject) -> ResponseStreamEvent:
        """response.completed or response.incomplete, carrying the finished response."""
        return self._event(
            "response.incomplete" if response["status"] == "incomplete" else "response.completed", response=response
        )

    def fail(self, error: ErrorInfo) -> ResponseStreamEvent:
        """response.failed: the error after the stream started, with what was output so far."""
        return self._event(
            "response.failed", response=self.builder.response(status="failed", output=self.output, error=error)
        )
