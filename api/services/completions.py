"""Serving chat and legacy completions: validate, resolve, dispatch, answer, record."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections

from engines.base import Chunk, GenerationRequest, SamplingParams
from models_registry.models import ApiKey, ServedModel
from models_registry.selectors import served_model_for_key

from .. import dispatch
from ..errors import INTERNAL_ERROR, ModelNotFound, UnsupportedParameter, error_info
from ..limits import Admission, limits_admit
from ..serializers import ChatCompletionRequestSerializer, CompletionRequestSerializer
from .openai_format import CHAT, STREAM_DONE, ChoiceResult, ChunkWriter, completion_body, sse_event
from .tracking import CLIENT_CLOSED, RequestTracker

logger = logging.getLogger(__name__)

_SERIALIZERS = {CHAT: ChatCompletionRequestSerializer, "completions": CompletionRequestSerializer}
# OpenAI's defaults where neither the request nor the model's defaults say otherwise; legacy
# completions stop at 16 tokens unless told otherwise, chat at the end of the context.
_SAMPLING_DEFAULTS = {CHAT: {"temperature": 1.0, "top_p": 1.0},
                      "completions": {"temperature": 1.0, "top_p": 1.0, "max_tokens": 16}}


@dataclass
class JsonResult:
    body: dict


@dataclass
class StreamResult:
    """OpenAI chunk objects, then error bodies if any, then STREAM_DONE. Closing it cancels."""

    events: AsyncIterator[dict | str]

    async def sse(self) -> AsyncIterator[bytes]:
        """The same stream as Server-Sent Events."""
        async with aclosing(self.events) as events:
            async for event in events:
                yield sse_event(event)


async def completion_serve(*, kind: str, key: ApiKey, read_body: Callable[[], object],
                           force_stream: bool = False) -> JsonResult | StreamResult:
    """Answer one completion request; exactly one record is written whatever happens.

    `force_stream` is for transports that always stream (WebSockets), whatever `stream` says.
    """
    tracker = RequestTracker(endpoint=kind, api_key_id=key.pk)
    admission: Admission | None = None
    handed_to_stream = False
    try:
        data = read_body()
        if force_stream and isinstance(data, dict):
            data = {**data, "stream": True}  # before validation: stream_options requires it
        body = _validate(kind, data)
        tracker.stream = bool(body.get("stream"))
        model = await sync_to_async(served_model_for_key)(key=key, name=body["model"])
        if model is None:
            raise ModelNotFound(
                f"The model `{body['model']}` does not exist or you do not have access to it.", param="model"
            )
        tracker.model_name = model.name
        admission = await limits_admit(key=key)  # 429 past a per-key limit
        tracker.engine = dispatch.resolve_engine(model)
        _check_capabilities(kind, body, model, tracker.engine)
        request = _generation_request(kind, body, model, tracker.request_id, tenant=str(key.pk))
        if settings.LOG_PROMPTS:
            logger.info("request %s prompt: %r", tracker.request_id, request.messages or request.prompt)
        # Tokens can take minutes. Give this request's database connection back meanwhile (each
        # request runs its ORM calls on its own thread, so each would hold one): otherwise a few
        # hundred requests in flight pass PostgreSQL's max_connections and new ones fail.
        await sync_to_async(close_old_connections)()
        chunks = dispatch.generate(model, request, record=tracker.record_fields(), on_started=tracker.started)
        if tracker.stream:
            # Wait for the first chunk before answering, so errors found before any token
            # (context overflow, a model that will not load) still get a proper 4xx/5xx.
            try:
                first = await anext(chunks)
            except BaseException:
                await chunks.aclose()
                raise
            handed_to_stream = True  # the stream gives the admission back when it ends
            return StreamResult(_stream_events(kind, body, tracker, chunks, first, admission))
        return JsonResult(await _collect(kind, body, tracker, chunks))
    except asyncio.CancelledError:
        await tracker.finish(status=CLIENT_CLOSED, finish_reason="cancelled")
        raise
    except Exception as exc:
        info = error_info(exc) or INTERNAL_ERROR
        await tracker.finish(status=info.status, finish_reason="error", error=info)
        raise
    finally:
        if admission is not None and not handed_to_stream:
            await admission.finish(tokens=_tokens_used(tracker))


def _tokens_used(tracker: RequestTracker) -> int:
    return (tracker.prompt_tokens or 0) + (tracker.completion_tokens or 0)


def _validate(kind: str, data) -> dict:
    serializer = _SERIALIZERS[kind](data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _check_capabilities(kind: str, body: dict, model: ServedModel, engine_name: str) -> None:
    """Reject features the engine does not implement; they are never silently ignored."""
    capabilities = dispatch.engine_capabilities(model)
    wanted = {
        "streaming": ("stream", bool(body.get("stream"))),
        "stop": ("stop", bool(body.get("stop"))),
        "seed": ("seed", body.get("seed") is not None),
        "n": ("n", (body.get("n") or 1) > 1),
        "logprobs": ("logprobs", _wants_logprobs(kind, body)),
        "logit_bias": ("logit_bias", bool(body.get("logit_bias"))),
        "tools": ("tools", bool(body.get("tools")) or body.get("tool_choice") not in (None, "none", "auto")
                  or any(m.get("tool_calls") or m["role"] == "tool" for m in body.get("messages", []))),
        "response_format": ("response_format", _wants_format(body.get("response_format"))),
    }
    for feature, (param, used) in wanted.items():
        if used and feature not in capabilities:
            raise UnsupportedParameter(
                f"The '{param}' parameter is not supported by the {engine_name} engine serving "
                f"model `{model.name}`.", param=param,
            )
    if body.get("best_of") not in (None, body.get("n") or 1):
        raise UnsupportedParameter("'best_of' is not supported (other than equal to n).", param="best_of")
    if kind != CHAT and (body.get("echo") or body.get("suffix")):
        param = "echo" if body.get("echo") else "suffix"
        raise UnsupportedParameter(f"'{param}' is not supported by the {engine_name} engine.", param=param)


def _wants_logprobs(kind: str, body: dict) -> bool:
    """Chat asks with `logprobs: true`; legacy completions with any `logprobs` count, 0 included."""
    return body.get("logprobs") is True if kind == CHAT else body.get("logprobs") is not None


def _wants_format(response_format) -> bool:
    """Whether the request asks for anything but plain text output."""
    if response_format is None:
        return False
    if isinstance(response_format, dict):
        return response_format.get("type", "text") != "text"
    return True


def _generation_request(kind: str, body: dict, model: ServedModel, request_id: str, *,
                        tenant: str) -> GenerationRequest:
    """The engine's request; `tenant` (the key) is whom a model's queue serves round-robin."""
    defaults = {**_SAMPLING_DEFAULTS[kind], **(model.default_params or {})}

    def pick(name):
        value = body.get(name)
        return value if value is not None else defaults.get(name)

    stop = body.get("stop") or defaults.get("stop") or ()  # a string is one sequence, never split
    sampling = SamplingParams(
        max_tokens=pick("max_tokens"),
        temperature=pick("temperature"),
        top_p=pick("top_p"),
        stop=tuple([stop] if isinstance(stop, str) else stop),
        seed=pick("seed"),
        presence_penalty=pick("presence_penalty") or 0.0,
        frequency_penalty=pick("frequency_penalty") or 0.0,
        n=body.get("n") or 1,
        logprobs=_wants_logprobs(kind, body),
        top_logprobs=(body.get("top_logprobs") if kind == CHAT else body.get("logprobs")) or 0,
        logit_bias=body.get("logit_bias") or (),
    )
    if kind == CHAT:
        # The serializer turns null content into ""; `or` keeps a None from reaching any engine.
        messages = tuple({"role": m["role"], "content": m.get("content") or ""} for m in body["messages"])
        return GenerationRequest(request_id=request_id, sampling=sampling, messages=messages, tenant=tenant)
    return GenerationRequest(request_id=request_id, sampling=sampling, prompt=body["prompt"], tenant=tenant)


def _completion_id(kind: str, tracker: RequestTracker) -> str:
    return f"{'chatcmpl' if kind == CHAT else 'cmpl'}-{tracker.request_id}"


async def _collect(kind: str, body: dict, tracker: RequestTracker, chunks: AsyncIterator[Chunk]) -> dict:
    wants_logprobs = _wants_logprobs(kind, body)
    choices = [ChoiceResult(logprobs=[] if wants_logprobs else None) for _ in range(body.get("n") or 1)]
    parts: list[list[str]] = [[] for _ in choices]
    final: Chunk | None = None
    async with aclosing(chunks):
        async for chunk in chunks:
            tracker.first_token()
            parts[chunk.index].append(chunk.text)
            if wants_logprobs:
                choices[chunk.index].logprobs.extend(chunk.logprobs)
            if chunk.finish_reason is not None:
                final = chunk
    if final is None:
        raise RuntimeError("engine ended without a final chunk")
    tracker.counts(final.prompt_tokens, final.completion_tokens, final.cached_tokens)
    await tracker.finish(status=200, finish_reason=final.finish_reason)
    reasons = _finish_reasons(final, len(choices))
    for choice, text, reason in zip(choices, parts, reasons):
        choice.text, choice.finish_reason = "".join(text), reason
    return completion_body(
        kind=kind, completion_id=_completion_id(kind, tracker), model=body["model"], choices=choices,
        prompt_tokens=final.prompt_tokens or 0, completion_tokens=final.completion_tokens or 0,
        cached_tokens=final.cached_tokens,
    )


def _finish_reasons(final: Chunk, n: int) -> tuple[str, ...]:
    """Each choice's finish reason, from the final chunk (engines give one list for n > 1)."""
    return final.finish_reasons if len(final.finish_reasons) == n else (final.finish_reason,) * n


async def _stream_events(kind: str, body: dict, tracker: RequestTracker, chunks: AsyncIterator[Chunk],
                         first: Chunk, admission: Admission) -> AsyncIterator[dict | str]:
    """Chunk objects for one request. Closing this iterator (client gone) cancels generation."""
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    writer = ChunkWriter(kind=kind, completion_id=_completion_id(kind, tracker), model=body["model"],
                         include_usage=include_usage, n=body.get("n") or 1, logprobs=_wants_logprobs(kind, body))
    status, finish_reason, error = CLIENT_CLOSED, "cancelled", None
    try:
        async with aclosing(chunks):
            for opening in writer.openings():
                yield opening
            chunk = first
            while True:
                tracker.first_token()
                tracker.streamed(len(chunk.token_ids))
                if chunk.text or chunk.logprobs:
                    yield writer.delta(chunk.text, chunk.index, chunk.logprobs)
                if chunk.finish_reason is not None:
                    break
                chunk = await anext(chunks)
        tracker.counts(chunk.prompt_tokens, chunk.completion_tokens, chunk.cached_tokens)
        status, finish_reason = 200, chunk.finish_reason
        for index, reason in enumerate(_finish_reasons(chunk, writer.n)):
            yield writer.finish(reason, index)
        if include_usage:
            yield writer.usage(chunk.prompt_tokens or 0, chunk.completion_tokens or 0, chunk.cached_tokens)
        yield STREAM_DONE
    except (asyncio.CancelledError, GeneratorExit):
        raise
    except Exception as exc:
        # Headers are already sent: report the error in-band, as OpenAI does.
        error = error_info(exc)
        if error is None:
            logger.exception("stream %s failed", tracker.request_id)
            error = INTERNAL_ERROR
        status, finish_reason = error.status, "error"
        yield error.body()
    finally:
        await tracker.finish(status=status, finish_reason=finish_reason, error=error)
        await admission.finish(tokens=_tokens_used(tracker))
