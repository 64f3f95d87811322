"""A whole answer put together from an engine's chunks, whatever protocol will show it.

OpenAI chat and completions, the Responses API and Anthropic Messages each render the same
thing when they do not stream: per choice its text, its tool calls (assembled from their
deltas) and why it ended, plus the engine's token counts.
"""

from __future__ import annotations

import dataclasses

from engines.base import Chunk, TokenLogprob, ToolCallDelta


@dataclasses.dataclass
class ToolCall:
    """One complete tool call: its id, the function's name and the JSON text of its arguments."""

    id: str
    name: str
    arguments: str = ""


@dataclasses.dataclass
class ChoiceOutcome:
    """One choice's text, tool calls and finish reason; `logprobs` is None unless asked for."""

    text: str = ""
    tool_calls: list[ToolCall] = dataclasses.field(default_factory=list)
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] | None = None


@dataclasses.dataclass
class Outcome:
    """Every choice of one request, with the engine-tokenizer counts of the whole request."""

    choices: list[ChoiceOutcome]
    final: Chunk  # the engine's last chunk, which the request's record reads
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int | None = None


class OutcomeBuilder:
    """Collects chunks (`add`) into an Outcome (`outcome`, once the final chunk is in)."""

    def __init__(self, *, n: int = 1, logprobs: bool = False):
        self._choices = [ChoiceOutcome(logprobs=[] if logprobs else None) for _ in range(n)]
        self._texts: list[list[str]] = [[] for _ in range(n)]
        self.final: Chunk | None = None

    def add(self, chunk: Chunk) -> None:
        """Take one chunk's text, logprobs and tool-call pieces; the final one's counts too."""
        choice = self._choices[chunk.index]
        self._texts[chunk.index].append(chunk.text)
        if choice.logprobs is not None:
            choice.logprobs.extend(chunk.logprobs)
        for delta in chunk.tool_calls:
            _add_tool_call_delta(choice.tool_calls, delta)
        if chunk.finish_reason is not None:
            self.final = chunk

    def outcome(self) -> Outcome:
        """The answer; raises RuntimeError if the engine never sent its final chunk."""
        final = self.final
        if final is None:
            raise RuntimeError("engine ended without a final chunk")
        reasons = finish_reasons(final, len(self._choices))
        for choice, texts, reason in zip(self._choices, self._texts, reasons, strict=True):
            choice.text, choice.finish_reason = "".join(texts), reason
        return Outcome(
            choices=self._choices,
            final=final,
            prompt_tokens=final.prompt_tokens or 0,
            completion_tokens=final.completion_tokens or 0,
            cached_tokens=final.cached_tokens,
        )


def finish_reasons(final: Chunk, n: int) -> tuple[str | None, ...]:
    """Each choice's finish reason, from the final chunk (engines give one list for n > 1)."""
    return final.finish_reasons if len(final.finish_reasons) == n else (final.finish_reason,) * n


def _add_tool_call_delta(calls: list[ToolCall], delta: ToolCallDelta) -> None:
    """Start call number `delta.call` at its first piece, then append its argument fragments."""
    while len(calls) <= delta.call:
        calls.append(ToolCall(id="", name=""))
    call = calls[delta.call]
    if delta.id is not None:
        call.id = delta.id
    if delta.name is not None:
        call.name = delta.name
    call.arguments += delta.arguments
