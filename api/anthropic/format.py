"""Building Anthropic's message objects and stream events from the engine's outcome and chunks."""

from __future__ import annotations

import json
import logging
from typing import Any

from engines.base import Chunk, ToolCallDelta
from serving.outcome import Outcome

from .shapes import (
    AnthropicMessage,
    ContentBlockDelta,
    ContentBlockStart,
    ContentBlockStop,
    MessageDelta,
    MessageStart,
    MessageStop,
    MessageUsage,
    Ping,
    StopReason,
    StreamEvent,
)

logger = logging.getLogger(__name__)

# Engines name calls OpenAI's way (`call_...`); Anthropic's clients expect `toolu_...`.
_OPENAI_CALL_PREFIX = "call_"
TOOL_USE_PREFIX = "toolu_"


def message_id(request_id: str) -> str:
    return f"msg_{request_id}"


def tool_use_id(call_id: str) -> str:
    """The tool_use block id for an engine's call id (a tool_result answers with it)."""
    return (
        call_id if call_id.startswith(TOOL_USE_PREFIX) else TOOL_USE_PREFIX + call_id.removeprefix(_OPENAI_CALL_PREFIX)
    )


def stop_reason(finish_reason: str | None, stop_sequence: str | None) -> StopReason | None:
    """Anthropic's stop_reason for an engine's finish: a matched stop sequence says so, EOS is end_turn."""
    if finish_reason == "length":
        return "max_tokens"
    if finish_reason == "tool_calls":
        return "tool_use"
    if finish_reason == "stop":
        return "stop_sequence" if stop_sequence is not None else "end_turn"
    return None


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int | None) -> MessageUsage:
    """Anthropic's usage: input_tokens leaves out what the prefix cache served, reported apart."""
    body: MessageUsage = {"input_tokens": prompt_tokens - (cached_tokens or 0), "output_tokens": completion_tokens}
    if cached_tokens is not None:
        body["cache_read_input_tokens"] = cached_tokens
    return body


def tool_input(arguments: str) -> dict[str, Any]:
    """A call's JSON arguments as the tool_use block's input object ({} when there are none)."""
    if not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except ValueError:
        logger.warning("tool call arguments are not JSON: %.200r", arguments)
        return {}
    return value if isinstance(value, dict) else {}


def message_body(*, request_id: str, model: str, outcome: Outcome, stop_sequence: str | None) -> AnthropicMessage:
    """The whole (non-streamed) answer: its text, then its tool_use blocks."""
    choice = outcome.choices[0]
    content: list[dict[str, Any]] = []
    if choice.text or not choice.tool_calls:
        content.append({"type": "text", "text": choice.text})
    for call in choice.tool_calls:
        content.append(
            {"type": "tool_use", "id": tool_use_id(call.id), "name": call.name, "input": tool_input(call.arguments)}
        )
    return {
        "id": message_id(request_id),
        "type": "message",
        "role": "assistant",
        "content": content,
        "model": model,
        "stop_reason": stop_reason(choice.finish_reason, stop_sequence),
        "stop_sequence": stop_sequence if choice.finish_reason == "stop" else None,
        "usage": usage(outcome.prompt_tokens, outcome.completion_tokens, outcome.cached_tokens),
    }


def sse_event(event: StreamEvent) -> bytes:
    """One Server-Sent Event: an `event:` line naming its type, then its JSON."""
    payload = json.dumps(event, separators=(",", ":"))
    return b"event: " + event["type"].encode() + b"\ndata: " + payload.encode() + b"\n\n"


class StreamWriter:
    """The events of one streamed message: content blocks opened, fed and closed as the chunks come.

    Text goes into a text block; each tool call gets a tool_use block of its own, its arguments
    sent as `input_json_delta` fragments. A block closes when the next one opens or the message ends.
    """

    def __init__(self, *, request_id: str, model: str):
        self.request_id = request_id
        self.model = model
        self._blocks = 0  # blocks opened so far; the open one, if any, is the last
        self._open: str | int | None = None  # "text", or the engine's number of the call being written

    def opening(self) -> MessageStart:
        """message_start; the counts come with message_delta, once the engine has them."""
        start: MessageStart = {
            "type": "message_start",
            "message": {
                "id": message_id(self.request_id),
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": self.model,
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            },
        }
        return start

    def chunk(self, chunk: Chunk) -> list[StreamEvent]:
        """The events one engine chunk makes: its text, then its tool-call pieces."""
        events: list[StreamEvent] = []
        if chunk.text:
            if self._open != "text":
                events += self._start({"type": "text", "text": ""}, "text")
            events.append(self._delta({"type": "text_delta", "text": chunk.text}))
        for piece in chunk.tool_calls:
            events += self._tool_piece(piece)
        return events

    def _tool_piece(self, piece: ToolCallDelta) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        if self._open != piece.call:
            call_id = tool_use_id(piece.id or f"{self.request_id}_{piece.call}")
            block = {"type": "tool_use", "id": call_id, "name": piece.name or "", "input": {}}
            events += self._start(block, piece.call)
        if piece.arguments:
            events.append(self._delta({"type": "input_json_delta", "partial_json": piece.arguments}))
        return events

    def closing(self, final: Chunk) -> list[StreamEvent]:
        """The last block's stop, message_delta with the stop reason and the counts, message_stop."""
        events: list[StreamEvent] = []
        if self._open is None and not self._blocks:  # nothing was said: one empty text block, as a whole answer has
            events += self._start({"type": "text", "text": ""}, "text")
        events += self._stop()
        reason = final.finish_reason
        delta: MessageDelta = {
            "type": "message_delta",
            "delta": {
                "stop_reason": stop_reason(reason, final.stop_sequence),
                "stop_sequence": final.stop_sequence if reason == "stop" else None,
            },
            "usage": usage(final.prompt_tokens or 0, final.completion_tokens or 0, final.cached_tokens),
        }
        end: MessageStop = {"type": "message_stop"}
        return [*events, delta, end]

    def _start(self, block: dict[str, Any], which: str | int) -> list[StreamEvent]:
        events = self._stop()
        start: ContentBlockStart = {"type": "content_block_start", "index": self._blocks, "content_block": block}
        events.append(start)
        if not self._blocks:  # Anthropic's streams ping once, after the first block opens
            ping: Ping = {"type": "ping"}
            events.append(ping)
        self._blocks += 1
        self._open = which
        return events

    def _delta(self, delta: dict[str, str]) -> ContentBlockDelta:
        return {"type": "content_block_delta", "index": self._blocks - 1, "delta": delta}

    def _stop(self) -> list[StreamEvent]:
        if self._open is None:
            return []
        self._open = None
        stop: ContentBlockStop = {"type": "content_block_stop", "index": self._blocks - 1}
        return [stop]
