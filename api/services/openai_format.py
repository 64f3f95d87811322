"""Building OpenAI response objects (chat and legacy completions, whole and chunked)."""

from __future__ import annotations

import json
import time

CHAT = "chat.completions"
TEXT = "completions"

# Our engines also end with "cancelled"/"error"; OpenAI clients only know these.
_OPENAI_FINISH = {"stop": "stop", "length": "length"}


def openai_finish_reason(reason: str | None) -> str | None:
    return _OPENAI_FINISH.get(reason, reason) if reason else None


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int | None = None) -> dict:
    """OpenAI's usage object; `prompt_tokens_details` only when the engine reports a prefix cache."""
    body = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if cached_tokens is not None:
        body["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    return body


def completion_body(*, kind: str, completion_id: str, model: str, text: str, finish_reason: str,
                    prompt_tokens: int, completion_tokens: int, cached_tokens: int | None = None) -> dict:
    """The whole (non-streamed) answer."""
    if kind == CHAT:
        choice = {"index": 0, "message": {"role": "assistant", "content": text},
                  "logprobs": None, "finish_reason": openai_finish_reason(finish_reason)}
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": openai_finish_reason(finish_reason)}
        obj = "text_completion"
    return {
        "id": completion_id,
        "object": obj,
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [choice],
        "usage": usage(prompt_tokens, completion_tokens, cached_tokens),
    }


# Ends every stream: SSE sends it as `data: [DONE]`, WebSockets as a text frame.
STREAM_DONE = "[DONE]"


def sse_event(obj: dict | str) -> bytes:
    """One Server-Sent Event carrying a chunk object, an error body or the end marker."""
    payload = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))
    return b"data: " + payload.encode() + b"\n\n"


class ChunkWriter:
    """Builds the OpenAI chunk objects of one streamed request."""

    def __init__(self, *, kind: str, completion_id: str, model: str, include_usage: bool):
        self.kind = kind
        self.completion_id = completion_id
        self.model = model
        self.include_usage = include_usage
        self.created = int(time.time())

    def _event(self, choices: list, **extra) -> dict:
        obj = {
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
        return obj

    def _choice(self, text: str | None, finish_reason: str | None, role: bool = False) -> dict:
        if self.kind == CHAT:
            delta = {}
            if role:
                delta["role"] = "assistant"
            if text is not None:
                delta["content"] = text
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}

    def opening(self) -> dict | None:
        """Chat streams open with the assistant role, as OpenAI's do."""
        return self._event([self._choice("", None, role=True)]) if self.kind == CHAT else None

    def delta(self, text: str) -> dict:
        return self._event([self._choice(text, None)])

    def finish(self, finish_reason: str) -> dict:
        text = None if self.kind == CHAT else ""
        return self._event([self._choice(text, openai_finish_reason(finish_reason))])

    def usage(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int | None = None) -> dict:
        return self._event([], usage=usage(prompt_tokens, completion_tokens, cached_tokens))
