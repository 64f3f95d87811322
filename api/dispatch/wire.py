"""The JSON messages between web processes and workers (Celery job, channel-layer replies)."""

from __future__ import annotations

import dataclasses
from typing import Any

from engines import errors as engine_errors
from engines.base import Chunk, GenerationRequest, ModelSpec, SamplingParams, TokenLogprob, TopLogprob

JOB_STARTED = "job.started"
JOB_CHUNKS = "job.chunks"
JOB_ERROR = "job.error"
JOB_CANCEL = "job.cancel"


def job_message(*, engine: str, spec: ModelSpec, request: GenerationRequest, reply_channel: str,
                submitted_at: float, record: dict[str, Any]) -> dict[str, Any]:
    """Everything a worker needs to run one request and record it."""
    return {
        "engine": engine,
        "spec": dataclasses.asdict(spec),
        "request_id": request.request_id,
        "sampling": dataclasses.asdict(request.sampling),
        "messages": list(request.messages) if request.messages is not None else None,
        "prompt": request.prompt,
        "tenant": request.tenant,
        "reply_channel": reply_channel,
        "submitted_at": submitted_at,
        "record": record,
    }


def job_from_message(message: dict[str, Any]) -> tuple[str, ModelSpec, GenerationRequest]:
    sampling = dict(message["sampling"])
    sampling["stop"] = tuple(sampling.get("stop") or ())
    sampling["logit_bias"] = tuple((int(token), float(bias)) for token, bias in sampling.get("logit_bias") or ())
    request = GenerationRequest(
        request_id=message["request_id"],
        sampling=SamplingParams(**sampling),
        messages=tuple(message["messages"]) if message["messages"] is not None else None,
        prompt=message["prompt"],
        tenant=message.get("tenant", ""),  # absent from jobs a web process of an older version queued
    )
    return message["engine"], ModelSpec(**message["spec"]), request


def chunk_to_dict(chunk: Chunk) -> dict[str, Any]:
    """A chunk as JSON; fields at their defaults are left out (most chunks are one token of choice 0)."""
    data = {"text": chunk.text, "ids": list(chunk.token_ids)}
    if chunk.index:
        data["index"] = chunk.index
    if chunk.logprobs:
        data["logprobs"] = [_logprob_to_list(entry) for entry in chunk.logprobs]
    if chunk.finish_reason is not None:
        data.update(finish=chunk.finish_reason, prompt_tokens=chunk.prompt_tokens,
                    completion_tokens=chunk.completion_tokens, cached_tokens=chunk.cached_tokens)
        if chunk.finish_reasons:
            data["finish_reasons"] = list(chunk.finish_reasons)
    return data


def chunk_from_dict(data: dict[str, Any]) -> Chunk:
    return Chunk(text=data["text"], token_ids=tuple(data["ids"]), finish_reason=data.get("finish"),
                 prompt_tokens=data.get("prompt_tokens"), completion_tokens=data.get("completion_tokens"),
                 cached_tokens=data.get("cached_tokens"), index=data.get("index", 0),
                 logprobs=tuple(_logprob_from_list(entry) for entry in data.get("logprobs", ())),
                 finish_reasons=tuple(data.get("finish_reasons", ())))


# Logprobs travel as compact lists: [token, logprob, bytes, [[token, logprob, bytes], ...]].
def _logprob_to_list(entry: TokenLogprob) -> list:
    return [entry.token, entry.logprob, list(entry.bytes), [[t.token, t.logprob, list(t.bytes)] for t in entry.top]]


def _logprob_from_list(data: list) -> TokenLogprob:
    token, logprob, raw, top = data
    return TokenLogprob(token=token, logprob=logprob, bytes=tuple(raw),
                        top=tuple(TopLogprob(token=t, logprob=lp, bytes=tuple(b)) for t, lp, b in top))


def error_to_dict(exc: engine_errors.EngineError) -> dict[str, Any]:
    data = {"kind": type(exc).__name__, "message": str(exc), "param": exc.param}
    if isinstance(exc, engine_errors.EngineBusyError):
        data["retry_after"] = exc.retry_after
    return data


def error_from_dict(data: dict[str, Any]) -> engine_errors.EngineError:
    kind = getattr(engine_errors, data.get("kind", ""), None)
    if not (isinstance(kind, type) and issubclass(kind, engine_errors.EngineError)):
        kind = engine_errors.EngineCrashedError
    if issubclass(kind, engine_errors.EngineBusyError):
        return kind(data["message"], param=data.get("param"), retry_after=int(data.get("retry_after") or 1))
    return kind(data["message"], param=data.get("param"))
