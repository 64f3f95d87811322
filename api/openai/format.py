"""Building OpenAI response objects (chat and legacy completions, whole and chunked)."""

from __future__ import annotations

import json
import time
from typing import Any, cast, get_args

from engines.base import TokenLogprob, ToolCallDelta
from serving.outcome import ChoiceOutcome

from ..errors import Error
from .shapes import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatLogprobs,
    FinishReason,
    FunctionCallDelta,
    TextCompletion,
    TextCompletionChunk,
    TextLogprobs,
    Usage,
)
from .shapes import ToolCallDelta as ToolCallDeltaShape

CHAT = "chat.completions"
TEXT = "completions"

# `kind` picks which shape a builder returns, so the checker sees the union and the tests hold
# each answer and chunk to its own shape (tests/api validate them against the served schema).
Completion = ChatCompletion | TextCompletion
CompletionChunk = ChatCompletionChunk | TextCompletionChunk

# Our engines also end with "cancelled"/"error"; OpenAI clients only know these.
_OPENAI_FINISH = {reason: reason for reason in get_args(FinishReason)}


def openai_finish_reason(reason: str | None) -> str | None:
    return _OPENAI_FINISH.get(reason, reason) if reason else None


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int | None = None) -> Usage:
    """OpenAI's usage object; `prompt_tokens_details` only when the engine reports a prefix cache."""
    body: Usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if cached_tokens is not None:
        body["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    return body


def chat_logprobs(entries: list[TokenLogprob] | tuple[TokenLogprob, ...]) -> ChatLogprobs:
    """A chat choice's `logprobs` object."""
    return {
        "content": [
            {
                "token": e.token,
                "logprob": e.logprob,
                "bytes": list(e.bytes),
                "top_logprobs": [{"token": t.token, "logprob": t.logprob, "bytes": list(t.bytes)} for t in e.top],
            }
            for e in entries
        ],
        "refusal": None,
    }


def text_logprobs(entries: list[TokenLogprob] | tuple[TokenLogprob, ...], offset: int = 0) -> TextLogprobs:
    """A legacy completion choice's `logprobs` object; `offset` is where the first token's text
    starts in the choice's text. Each `top_logprobs` dict also holds the chosen token, as OpenAI's do."""
    tokens, offsets = [], []
    for entry in entries:
        tokens.append(entry.token)
        offsets.append(offset)
        offset += len(entry.token)
    return {
        "tokens": tokens,
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [{**{t.token: t.logprob for t in e.top}, e.token: e.logprob} for e in entries],
        "text_offset": offsets,
    }


def assistant_message(choice: ChoiceOutcome) -> AssistantMessage:
    """A chat choice's message: its text, and its tool calls if it made any (content null if only those)."""
    if not choice.tool_calls:
        return {"role": "assistant", "content": choice.text}
    return {
        "role": "assistant",
        "content": choice.text or None,
        "tool_calls": [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            for call in choice.tool_calls
        ],
    }


def tool_call_deltas(piece: ToolCallDelta) -> list[ToolCallDeltaShape]:
    """OpenAI's streamed pieces of a call: its opening (id, type, name, arguments "") then any arguments."""
    deltas: list[ToolCallDeltaShape] = []
    if piece.id is not None:
        function: FunctionCallDelta = {"name": piece.name or "", "arguments": ""}
        deltas.append({"index": piece.call, "id": piece.id, "type": "function", "function": function})
    if piece.arguments:
        deltas.append({"index": piece.call, "function": {"arguments": piece.arguments}})
    return deltas


def completion_body(
    *,
    kind: str,
    completion_id: str,
    model: str,
    choices: list[ChoiceOutcome],
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int | None = None,
) -> Completion:
    """The whole (non-streamed) answer."""
    bodies: list[dict[str, Any]] = []
    for index, choice in enumerate(choices):
        finish = openai_finish_reason(choice.finish_reason)
        if kind == CHAT:
            chat = None if choice.logprobs is None else chat_logprobs(choice.logprobs)
            bodies.append(
                {"index": index, "message": assistant_message(choice), "logprobs": chat, "finish_reason": finish}
            )
        else:
            text = None if choice.logprobs is None else text_logprobs(choice.logprobs)
            bodies.append({"index": index, "text": choice.text, "logprobs": text, "finish_reason": finish})
    return cast(
        Completion,
        {
            "id": completion_id,
            "object": "chat.completion" if kind == CHAT else "text_completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": None,
            "choices": bodies,
            "usage": usage(prompt_tokens, completion_tokens, cached_tokens),
        },
    )


# Ends every stream: SSE sends it as `data: [DONE]`, WebSockets as a text frame.
STREAM_DONE = "[DONE]"


def sse_event(obj: CompletionChunk | Error | str) -> bytes:
    """One Server-Sent Event carrying a chunk object, an error body or the end marker."""
    payload = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))
    return b"data: " + payload.encode() + b"\n\n"


class ChunkWriter:
    """Builds the OpenAI chunk objects of one streamed request (`n` choices, told apart by index)."""

    def __init__(
        self, *, kind: str, completion_id: str, model: str, include_usage: bool, n: int = 1, logprobs: bool = False
    ):
        self.kind = kind
        self.completion_id = completion_id
        self.model = model
        self.include_usage = include_usage
        self.n = n
        self.logprobs = logprobs
        self.created = int(time.time())
        self._text_offsets = [0] * n  # legacy logprobs count offsets within each choice's text

    def _event(self, choices: list, **extra) -> CompletionChunk:
        obj: dict[str, Any] = {
            "id": self.completion_id,
            "object": "chat.completion.chunk" if self.kind == CHAT else "text_completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": choices,
        }
        if self.include_usage:
            obj["usage"] = None
        obj.update(extra)
        return cast(CompletionChunk, obj)

    def _choice(
        self,
        index: int,
        text: str | None,
        finish_reason: str | None,
        role: bool = False,
        logprobs: tuple[TokenLogprob, ...] | None = None,
    ) -> dict[str, Any]:
        if self.kind == CHAT:
            delta: dict[str, str] = {}
            if role:
                delta["role"] = "assistant"
            if text is not None:
                delta["content"] = text
            chat = None if logprobs is None else chat_logprobs(logprobs)
            return {"index": index, "delta": delta, "logprobs": chat, "finish_reason": finish_reason}
        body = None
        if logprobs is not None:
            body = text_logprobs(logprobs, self._text_offsets[index])
            self._text_offsets[index] += sum(len(entry.token) for entry in logprobs)
        return {"index": index, "text": text or "", "logprobs": body, "finish_reason": finish_reason}

    def openings(self) -> list[CompletionChunk]:
        """Chat streams open with the assistant role for every choice, as OpenAI's do."""
        if self.kind != CHAT:
            return []
        return [self._event([self._choice(index, "", None, role=True)]) for index in range(self.n)]

    def delta(self, text: str, index: int = 0, logprobs: tuple[TokenLogprob, ...] = ()) -> CompletionChunk:
        return self._event([self._choice(index, text, None, logprobs=logprobs if self.logprobs else None)])

    def tool_calls(self, piece: ToolCallDelta, index: int = 0) -> list[CompletionChunk]:
        """Chat chunks carrying one piece of a tool call, as OpenAI streams them (one per chunk)."""
        return [
            self._event([{"index": index, "delta": {"tool_calls": [delta]}, "logprobs": None, "finish_reason": None}])
            for delta in tool_call_deltas(piece)
        ]

    def finish(self, finish_reason: str | None, index: int = 0) -> CompletionChunk:
        text = None if self.kind == CHAT else ""
        return self._event([self._choice(index, text, openai_finish_reason(finish_reason))])

    def usage(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int | None = None) -> CompletionChunk:
        return self._event([], usage=usage(prompt_tokens, completion_tokens, cached_tokens))
