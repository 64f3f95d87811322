"""Distributed mode, web side: enqueue the job on `model.<name>`, read replies off the channel layer.

A job's lifecycle on the reply channel: `job.started` (which worker, its control channel,
how long the job queued), then `job.chunks` batches until one carries a finish reason, or a
`job.error`. While waiting, the web process checks the worker's liveness key, so a worker
killed mid-request turns into an error within about WORKER_DEAD_AFTER_SECONDS. A job whose
model already has `max_waiting` jobs queued is refused before it is enqueued (see backlog).

A model with no ready copy is waited for before the job is enqueued (serving.deployments.demand):
an on-demand one is loaded by a worker with room, so the request's time to first token includes
the load, and one that no worker can take is a 503 with Retry-After at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import BaseChannelLayer, get_channel_layer
from django.conf import settings
from django.db import close_old_connections
from redis.exceptions import RedisError

from engines.admission import max_waiting_option
from engines.base import Chunk, GenerationRequest
from models_registry.models import ServedModel, WorkerRegistration
from models_registry.recent_reads import RecentReads
from models_registry.selectors import active_worker_ids, live_workers, ready_workers_for
from models_registry.services.deployments import served_model_want
from models_registry.services.workers import workers_mark_silent_dead
from monitoring.load import ModelLoad

from .. import protocol
from ..deployments import demand, placement, snapshot
from ..errors import ServiceUnavailable, WorkerLost
from ..protocol import cancelled_key, liveness_key, queue_name, redis_client
from ..route import Route
from . import backlog
from .backend import OnStarted

logger = logging.getLogger(__name__)


def _unavailable(what: str, exc: BaseException) -> ServiceUnavailable:
    logger.warning("%s: %s", what, exc)
    return ServiceUnavailable(f"The job queue is unreachable ({what}); try again shortly.")


async def generate(
    route: Route, request: GenerationRequest, *, record: dict[str, Any], on_started: OnStarted
) -> AsyncGenerator[Chunk, None]:
    """Enqueue the job and stream its replies; the worker that takes it writes the record."""
    model = route.model
    if not await _has_ready_copy(model.name):
        await sync_to_async(workers_mark_silent_dead)()
        # Loads an on-demand model (this request's time to first token includes the load), waits
        # for a placed one to become ready, or refuses at once when no worker can take it.
        await demand.await_copy(model, is_ready=lambda: _has_ready_copy(model.name))
    await sync_to_async(close_old_connections)()  # no connection held while the job runs (see completion_serve)
    await _require_queue_room(model)
    layer = get_channel_layer()
    reply_channel = await layer.new_channel()
    message = protocol.job_message(
        engine=route.engine,
        spec=route.spec,
        request=request,
        reply_channel=reply_channel,
        submitted_at=time.time(),
        record=record,
    )
    try:
        await asyncio.wait_for(
            asyncio.to_thread(protocol.publish_job, message, queue_name(model.name)),
            timeout=settings.REDIS_TIMEOUT_SECONDS * 2,
        )
    except Exception as exc:  # kombu raises its own and OS-level errors for a dead broker
        raise _unavailable("could not enqueue the job", exc) from exc

    started: dict[str, Any] | None = None
    finished = False
    queue_deadline = time.monotonic() + settings.QUEUE_TIMEOUT_SECONDS
    poll = max(settings.WORKER_HEARTBEAT_SECONDS, 0.2)
    waiting = _QueuedDemand(model)
    replies = ReplyReader(layer, reply_channel)
    try:
        while True:
            try:
                reply = await replies.next(timeout=poll)
            except (RedisError, OSError) as exc:
                raise _unavailable("lost the reply channel", exc) from exc
            if reply is None:
                if started is not None:
                    if not await _worker_alive(started["worker"]):
                        raise WorkerLost(f"Worker {started['worker']} stopped while running this request.")
                elif time.monotonic() > queue_deadline:
                    raise ServiceUnavailable(
                        f"No worker took the request within {settings.QUEUE_TIMEOUT_SECONDS:.0f}s."
                    )
                elif await waiting.copy_lost():
                    # Its copy went (evicted, unloaded) while the job queued: the wait now includes a load.
                    queue_deadline = max(queue_deadline, time.monotonic() + settings.LOAD_TIMEOUT_SECONDS)
                continue
            kind = reply.get("type")
            if kind == protocol.JOB_STARTED:
                started = reply
                on_started(reply["worker"], reply["queue_wait_ms"], True)
            elif kind == protocol.JOB_CHUNKS:
                for data in reply["chunks"]:
                    chunk = protocol.chunk_from_dict(data)
                    if chunk.finish_reason is not None:
                        finished = True
                    yield chunk
                    if finished:
                        return
            elif kind == protocol.JOB_ERROR:
                finished = True
                raise protocol.error_from_dict(reply["error"])
            else:
                logger.error("unexpected reply %r for request %s", kind, request.request_id)
    finally:
        await replies.close()
        if not finished:
            await asyncio.shield(_cancel(request.request_id, started))


async def _has_ready_copy(model_name: str) -> bool:
    """Whether a ready worker hosts the model now (its copy is ready, and the worker takes its jobs)."""
    return bool(await sync_to_async(ready_workers_for)(model_name=model_name))


class _QueuedDemand:
    """While a job waits in its queue, checks now and then that a ready copy of its model still exists.

    A copy can go while jobs wait for it: evicted to make room for another model, or unloaded by
    the admin. Nothing else would ask for an on-demand model again, so the job would wait out
    QUEUE_TIMEOUT_SECONDS for no worker: the waiting request wants it again. (A model with
    replicas needs no asking: placement puts its copies back by itself.)
    """

    CHECK_EVERY_SECONDS = 1.0

    def __init__(self, model: ServedModel) -> None:
        self._model = model
        self._next_check = time.monotonic() + self.CHECK_EVERY_SECONDS

    async def copy_lost(self) -> bool:
        """True when no ready copy exists any more and the model was wanted again (on-demand models)."""
        if not self._model.on_demand or time.monotonic() < self._next_check:
            return False
        self._next_check = time.monotonic() + self.CHECK_EVERY_SECONDS
        if await _has_ready_copy(self._model.name):
            return False
        await sync_to_async(served_model_want)(model_name=self._model.name, seconds=settings.LOAD_TIMEOUT_SECONDS)
        # The want holds for LOAD_TIMEOUT_SECONDS: renewing it at every check would wake every
        # host's reconciler each second for each waiting request.
        self._next_check = time.monotonic() + max(self.CHECK_EVERY_SECONDS, settings.LOAD_TIMEOUT_SECONDS / 4)
        return True


# ReplyReader.close cancels a receive this often, this many times, before it leaves it running.
CANCEL_RETRY_SECONDS = 0.2
CANCEL_TRIES = 25


class ReplyReader:
    """Reads one reply channel with one receive kept in flight across polls.

    channels_redis drops a channel's buffered messages when a receive on it is cancelled, so
    a poll that times out must not cancel the receive (as asyncio.wait_for would): the same
    receive carries on into the next poll, and only `close` cancels it, once the job is over.
    """

    def __init__(self, layer: BaseChannelLayer, channel: str) -> None:
        self._layer = layer
        self._channel = channel
        self._receiving: asyncio.Future[dict[str, Any]] | None = None

    async def next(self, timeout: float) -> dict[str, Any] | None:
        """The next message, or None when none came within `timeout` seconds."""
        if self._receiving is None:
            self._receiving = asyncio.ensure_future(self._layer.receive(self._channel))
        done, _ = await asyncio.wait({self._receiving}, timeout=timeout)
        if not done:
            return None
        received, self._receiving = self._receiving, None
        return received.result()

    async def close(self) -> None:
        """Cancel the receive in flight and wait for it to end, cancelling again until it does.

        One cancellation can be swallowed: when it lands in the blocking pop that channels_redis's
        receive runs in redis-py (the race of redis/redis-py#2028), the receive goes on waiting.
        Waiting on it once hung the request, after its error was known, until its client gave
        up; a worker dying under several streams showed it (benchmarks/host_kills.py).
        """
        receiving, self._receiving = self._receiving, None
        if receiving is None:
            return
        for _ in range(CANCEL_TRIES):
            receiving.cancel()
            done, _ = await asyncio.wait({receiving}, timeout=CANCEL_RETRY_SECONDS)
            if done:
                await asyncio.gather(receiving, return_exceptions=True)  # its outcome, retrieved
                return
        logger.warning("a receive on %s would not end after %d cancellations", self._channel, CANCEL_TRIES)


async def _require_queue_room(model: ServedModel) -> None:
    """Refuse at once (429) when the model's queue already holds its `max_waiting` jobs."""
    limit = max_waiting_option(model.engine_options or {}, model.name)  # as embedded mode's queue
    try:
        async with redis_client() as client:
            await backlog.require_room(client, model.name, queue_name(model.name), limit)
    except (RedisError, OSError) as exc:
        raise _unavailable("could not read the queue", exc) from exc


async def _worker_alive(worker_id: str) -> bool:
    try:
        async with redis_client() as client:
            return bool(await client.exists(liveness_key(worker_id)))
    except (RedisError, OSError) as exc:
        raise _unavailable("could not check the worker", exc) from exc


async def _cancel(request_id: str, started: dict[str, Any] | None) -> None:
    """Stop the job: tell its worker, or mark it so a worker that picks it up later skips it."""
    try:
        if started is not None:
            await get_channel_layer().send(started["control"], {"type": protocol.JOB_CANCEL, "request_id": request_id})
        else:
            async with redis_client() as client:
                await client.set(cancelled_key(request_id), 1, ex=int(settings.QUEUE_TIMEOUT_SECONDS) + 60)
    except Exception:
        logger.warning("could not cancel request %s", request_id, exc_info=True)


async def request_load(model_names: list[str]) -> dict[str, ModelLoad]:
    """What live workers report in their liveness keys (jobs running, jobs waiting in an engine's
    admission queue, KV cells), plus the jobs still in each model's queue as waiting (Celery's
    Redis transport keeps a queue as a list under its name)."""
    worker_ids = await sync_to_async(active_worker_ids)()
    try:
        async with redis_client() as client:
            async with client.pipeline(transaction=False) as pipe:
                for name in model_names:
                    pipe.llen(queue_name(name))
                waiting = await pipe.execute()
            beats = await client.mget([liveness_key(w) for w in worker_ids]) if worker_ids else []
    except (RedisError, OSError) as exc:
        raise _unavailable("could not read the queues", exc) from exc
    load = {name: ModelLoad(waiting=queued) for name, queued in zip(model_names, waiting)}
    for beat in beats:
        # Absent: the worker stopped heartbeating, so nothing runs there. A bare "1": a worker
        # from before liveness keys carried the load.
        report = json.loads(beat) if beat else None
        if isinstance(report, dict):
            for name, reported in worker_load(report).items():
                load[name] = load.get(name, ModelLoad()) + reported
    return load


def worker_load(report: dict[str, Any]) -> dict[str, ModelLoad]:
    """Per model, what one worker's liveness key says (see WorkerRuntime.load_report)."""
    running, waiting, kv_cache = report.get("running", {}), report.get("waiting", {}), report.get("kv_cache", {})
    load = {}
    for name in {*running, *waiting, *kv_cache}:
        held, capacity = kv_cache.get(name, (0, 0))
        load[name] = ModelLoad(
            running=running.get(name, 0), waiting=waiting.get(name, 0), kv_cache_tokens=held, kv_cache_capacity=capacity
        )
    return load


# /health is polled many times a second: what the database says is read at most this often.
READINESS_TTL_SECONDS = 1.0
_readiness_recent: RecentReads[tuple[bool, str]] = RecentReads(ttl_seconds=READINESS_TTL_SECONDS, max_entries=1)


async def readiness() -> tuple[bool, str]:
    """Ready when Redis answers and a live worker serves an enabled model, or may load one."""
    ready, reason = await _readiness_recent.get(None, sync_to_async(workers_readiness))
    if not ready:
        return ready, reason
    try:
        async with redis_client() as client:
            await client.ping()
    except (RedisError, OSError) as exc:
        return False, f"Redis unreachable: {exc}"
    return True, "ready"


def workers_readiness() -> tuple[bool, str]:
    """Whether a ready, live worker hosts an enabled model or takes placements that one fits, and why not."""
    models = snapshot.enabled_models()
    if not models:
        return False, "no enabled models are registered"
    workers = [w for w in live_workers() if w.state == WorkerRegistration.State.READY]
    if not workers:
        return False, "no live worker is ready (start one: celery -A inference_platform worker)"
    deployments = snapshot.deployment_views(models)
    for worker in workers:
        if set(worker.hosted_models or []) & set(models):  # a ready copy
            return True, "ready"
        view = snapshot.host_view(worker, {})
        if not view.pinned and not view.drained and any(placement.allows(d, view) for d in deployments):
            return True, "ready"
    return False, "no live worker hosts an enabled model or may load one (check placement labels and drained workers)"
