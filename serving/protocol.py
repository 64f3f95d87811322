"""What web processes and workers agree on: job and reply messages, queue names, Redis keys,
and the one factory every Redis client of the platform comes from.

Changing a name or a message field here changes the wire: a web process and a worker of
different versions must still understand each other while a deployment rolls.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, overload

import redis
import redis.asyncio as aioredis
from celery import current_app
from django.conf import settings

from engines import errors as engine_errors
from engines.base import (
    Chunk,
    GenerationRequest,
    ModelSpec,
    OutputFormat,
    SamplingParams,
    TokenLogprob,
    ToolCallDelta,
    ToolSpec,
    TopLogprob,
)

# The Celery task that runs one job. The name predates serving/ and stays: jobs queued by a
# web process of the previous version must still find their task on a newer worker.
GENERATE_TASK = "api.generate"


def publish_job(message: dict[str, Any], queue: str) -> None:
    """Send one job to a model's queue. Blocking (kombu): call it off the event loop.

    By the task's name: its module is the worker's, which a web process has no reason to import.
    """
    current_app.send_task(GENERATE_TASK, args=[message], queue=queue, retry=False)


# Replies on a job's channel-layer reply channel, and the cancellation on a worker's control channel.
JOB_STARTED = "job.started"
JOB_CHUNKS = "job.chunks"
JOB_ERROR = "job.error"
JOB_CANCEL = "job.cancel"

# Every Redis key of the platform starts here, so one prefix tells an operator what is ours.
KEY_PREFIX = "inference"
LIMITS_PREFIX = f"{KEY_PREFIX}:limits"
SYSTEM_SUMMARY_PREFIX = f"{KEY_PREFIX}:system:"


def queue_name(model_name: str) -> str:
    """The Celery queue (a Redis list under this name) that a model's jobs wait in."""
    return f"model.{model_name}"


def liveness_key(worker_id: str) -> str:
    """A worker's heartbeat, carrying its load; it expires when the worker stops beating."""
    return f"{KEY_PREFIX}:worker-alive:{worker_id}"


def cancelled_key(request_id: str) -> str:
    """Set when a request is cancelled before a worker took it, so the worker skips it."""
    return f"{KEY_PREFIX}:cancelled:{request_id}"


def finished_key(model_name: str, bucket: int) -> str:
    """Jobs of a model that workers finished in one time bucket (the queue's drain rate)."""
    return f"{KEY_PREFIX}:finished:{model_name}:{bucket}"


def limits_key(key_id: int, prefix: str = LIMITS_PREFIX) -> str:
    """The base name of one API key's limit counters (rpm, tpm and concurrency hang off it)."""
    return f"{prefix}:{key_id}"


def system_summary_key(host: str, pid: int) -> str:
    """One process's latest system summary."""
    return f"{SYSTEM_SUMMARY_PREFIX}{host}:{pid}"


# `timeout`: seconds a command may take. The default bounds every call from the request path,
# so an outage is a quick 503, not a hang; None (the worker's long-lived client) waits.
_REQUEST_TIMEOUT: Any = object()


@overload
def redis_client(
    *, sync: Literal[False] = False, url: str | None = None, timeout: float | None = ...
) -> aioredis.Redis: ...


@overload
def redis_client(*, sync: Literal[True], url: str | None = None, timeout: float | None = ...) -> redis.Redis: ...


def redis_client(
    *, sync: bool = False, url: str | None = None, timeout: float | None = _REQUEST_TIMEOUT
) -> aioredis.Redis | redis.Redis:
    """A Redis client for REDIS_URL (or `url`) with the platform's connection options.

    Async unless `sync`. Use it as a context manager (`async with` / `with`) to close it.
    """
    socket_timeout = settings.REDIS_TIMEOUT_SECONDS if timeout is _REQUEST_TIMEOUT else timeout
    options = {**settings.REDIS_CONNECTION_OPTIONS, "socket_timeout": socket_timeout}
    if sync:
        return redis.Redis.from_url(url or settings.REDIS_URL, **options)
    return aioredis.Redis.from_url(url or settings.REDIS_URL, **options)


def job_message(
    *,
    engine: str,
    spec: ModelSpec,
    request: GenerationRequest,
    reply_channel: str,
    submitted_at: float,
    record: dict[str, Any],
) -> dict[str, Any]:
    """Everything a worker needs to run one request and record it."""
    return {
        "engine": engine,
        "spec": _spec_dict(spec),
        "request_id": request.request_id,
        "sampling": dataclasses.asdict(request.sampling),
        "messages": list(request.messages) if request.messages is not None else None,
        "prompt": request.prompt,
        "tenant": request.tenant,
        **_request_extras(request),
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
        **_request_extras_from(message),
    )
    return message["engine"], ModelSpec(**message["spec"]), request


def _spec_dict(spec: ModelSpec) -> dict[str, Any]:
    """The spec as JSON; a generate model's leaves `task` out, so workers of the version before
    tasks still read it."""
    data = dataclasses.asdict(spec)
    if spec.task == "generate":
        del data["task"]
    return data


def _request_extras(request: GenerationRequest) -> dict[str, Any]:
    """The request's fields beyond plain generation, only where they are set (most jobs use none)."""
    data: dict[str, Any] = {}
    if request.task != "generate":
        data["task"] = request.task
    if request.tools:
        data["tools"] = [dataclasses.asdict(tool) for tool in request.tools]
    if request.tool_choice != "auto":
        data["tool_choice"] = request.tool_choice
    if request.forced_tool is not None:
        data["forced_tool"] = request.forced_tool
    if not request.parallel_tool_calls:
        data["parallel_tool_calls"] = False
    if request.output_format is not None:
        data["output_format"] = dataclasses.asdict(request.output_format)
    if request.inputs:
        data["inputs"] = [item if isinstance(item, str) else list(item) for item in request.inputs]
    if request.token_ids:
        data["token_ids"] = list(request.token_ids)
    if not request.add_special:
        data["add_special"] = False
    if not request.add_generation_prompt:
        data["add_generation_prompt"] = False
    if request.dimensions is not None:
        data["dimensions"] = request.dimensions
    return data


def _request_extras_from(message: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments `_request_extras` wrote; absent keys keep the request's defaults."""
    extras: dict[str, Any] = {}
    for name in (
        "task",
        "tool_choice",
        "forced_tool",
        "parallel_tool_calls",
        "add_special",
        "add_generation_prompt",
        "dimensions",
    ):
        if name in message:
            extras[name] = message[name]
    if "tools" in message:
        extras["tools"] = tuple(ToolSpec(**tool) for tool in message["tools"])
    if "output_format" in message:
        extras["output_format"] = OutputFormat(**message["output_format"])
    if "inputs" in message:
        extras["inputs"] = tuple(item if isinstance(item, str) else tuple(item) for item in message["inputs"])
    if "token_ids" in message:
        extras["token_ids"] = tuple(message["token_ids"])
    return extras


def chunk_to_dict(chunk: Chunk) -> dict[str, Any]:
    """A chunk as JSON; fields at their defaults are left out (most chunks are one token of choice 0)."""
    data: dict[str, Any] = {"text": chunk.text, "ids": list(chunk.token_ids)}
    if chunk.index:
        data["index"] = chunk.index
    if chunk.logprobs:
        data["logprobs"] = [_logprob_to_list(entry) for entry in chunk.logprobs]
    if chunk.tool_calls:
        data["tool_calls"] = [[call.call, call.id, call.name, call.arguments] for call in chunk.tool_calls]
    if chunk.embedding:
        data["embedding"] = list(chunk.embedding)
    if chunk.finish_reason is not None:
        data.update(
            finish=chunk.finish_reason,
            prompt_tokens=chunk.prompt_tokens,
            completion_tokens=chunk.completion_tokens,
            cached_tokens=chunk.cached_tokens,
        )
        if chunk.finish_reasons:
            data["finish_reasons"] = list(chunk.finish_reasons)
        if chunk.stop_sequence is not None:
            data["stop_sequence"] = chunk.stop_sequence
    return data


def chunk_from_dict(data: dict[str, Any]) -> Chunk:
    return Chunk(
        text=data["text"],
        token_ids=tuple(data["ids"]),
        finish_reason=data.get("finish"),
        prompt_tokens=data.get("prompt_tokens"),
        completion_tokens=data.get("completion_tokens"),
        cached_tokens=data.get("cached_tokens"),
        index=data.get("index", 0),
        logprobs=tuple(_logprob_from_list(entry) for entry in data.get("logprobs", ())),
        finish_reasons=tuple(data.get("finish_reasons", ())),
        tool_calls=tuple(
            ToolCallDelta(call=call, id=id_, name=name, arguments=arguments)
            for call, id_, name, arguments in data.get("tool_calls", ())
        ),
        embedding=tuple(data.get("embedding", ())),
        stop_sequence=data.get("stop_sequence"),
    )


# Logprobs travel as compact lists: [token, logprob, bytes, [[token, logprob, bytes], ...]].
def _logprob_to_list(entry: TokenLogprob) -> list[Any]:
    return [entry.token, entry.logprob, list(entry.bytes), [[t.token, t.logprob, list(t.bytes)] for t in entry.top]]


def _logprob_from_list(data: list[Any]) -> TokenLogprob:
    token, logprob, raw, top = data
    return TokenLogprob(
        token=token,
        logprob=logprob,
        bytes=tuple(raw),
        top=tuple(TopLogprob(token=t, logprob=lp, bytes=tuple(b)) for t, lp, b in top),
    )


def error_to_dict(exc: engine_errors.EngineError) -> dict[str, Any]:
    data: dict[str, Any] = {"kind": type(exc).__name__, "message": str(exc), "param": exc.param}
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
