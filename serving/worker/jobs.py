"""The jobs a worker takes: each served on the engine loop, its chunks streamed back in batches.

A job is a generation request sent through a model's queue (serving.dispatch.distributed). Its
replies go to the request's reply channel: `job.started` (with the control channel that takes
its cancellation), batches of chunks, or one `job.error`. A job for a model this worker no
longer holds goes back to its queue once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from typing import Any

import redis.asyncio as aioredis
from channels.layers import BaseChannelLayer, get_channel_layer
from redis.exceptions import RedisError

from engines.base import Chunk, GenerationRequest, ModelSpec
from engines.errors import EngineError, EngineUnavailableError
from engines.host import EngineHost

from .. import protocol
from ..dispatch import backlog
from ..errors import error_info
from ..lifecycle import RequestLifecycle, request_lifecycle
from ..protocol import cancelled_key, queue_name

logger = logging.getLogger(__name__)

# A job's chunks are sent in batches: whatever the engine produced while the previous send
# was in flight goes out together, so per-token overhead stays bounded when tokens are fast.
MAX_BATCH = 256
JOB_TIME_LIMIT_SECONDS = 3600
# Marks a job a worker sent back to its queue: the next worker without the model refuses it.
REQUEUED = "requeued"

# Sends one reply message on the job's reply channel.
SendReply = Callable[[dict[str, Any]], Awaitable[None]]


class JobRunner:
    """Serves one worker's jobs on its engine host. `jobs` (by request id) and `running` (per
    model) are what the worker's heartbeat reports and its control channel cancels."""

    def __init__(self, host: EngineHost, worker_id: str, redis: Callable[[], aioredis.Redis]) -> None:
        self.host = host
        self.worker_id = worker_id
        self._redis = redis
        self.control_channel = ""  # the worker's, set once it is open
        self.jobs: dict[str, asyncio.Task[Any]] = {}
        self.running: Counter[str] = Counter()

    async def serve_and_count(self, message: dict[str, Any]) -> None:
        """Serve one job taken off a queue, and count it finished whatever its outcome."""
        if not self.host.has(message["spec"]["name"]) and await self._requeue(message):
            return  # not finished: another worker runs it
        try:
            await self._serve(message)
        finally:
            # Every job taken off the queue counts, whatever its outcome: web processes
            # estimate Retry-After from how fast the queue drains.
            try:
                await backlog.count_finished(self._redis(), message["spec"]["name"])
            except Exception:
                logger.warning("could not count a finished job", exc_info=True)

    async def _requeue(self, message: dict[str, Any]) -> bool:
        """A job for a model this worker no longer holds (its queue closed just after the job was
        taken: an unload, an eviction, a move): send it back to its queue, once, for a worker that
        holds the model. False when it came back already; it is then refused (see _serve)."""
        if message.get(REQUEUED):
            return False
        name = message["spec"]["name"]
        logger.info(
            "job %s is for %s, which this worker no longer holds: back to its queue", message["request_id"], name
        )
        try:
            await asyncio.to_thread(protocol.publish_job, {**message, REQUEUED: True}, queue_name(name))
        except Exception:
            logger.warning("could not send job %s back to its queue", message["request_id"], exc_info=True)
            return False
        return True

    async def _serve(self, message: dict[str, Any]) -> None:
        engine_name, spec, request = protocol.job_from_message(message)
        record = message["record"]
        async with request_lifecycle(
            endpoint=record["endpoint"],
            api_key_id=record["api_key_id"],
            request_id=request.request_id,
            started_at=message["submitted_at"],
        ) as life:
            life.model_name, life.engine, life.stream = record["model_name"], engine_name, record["stream"]
            queue_wait_ms = max(0.0, (time.time() - message["submitted_at"]) * 1000)
            life.host_started(self.worker_id, queue_wait_ms, records_itself=False)
            if await self._redis().exists(cancelled_key(request.request_id)):
                life.cancelled()
                return
            if not self.host.has(spec.name):
                # Sent back once already, or it could not be: a retryable 503, never a wait for nothing.
                refused = EngineUnavailableError(
                    f"Model `{spec.name}` was unloaded from the worker that took this request; try again."
                )
                life.failed(error_info(refused))
                await _send_quietly(
                    get_channel_layer(),
                    message["reply_channel"],
                    {"type": protocol.JOB_ERROR, "error": protocol.error_to_dict(refused)},
                )
                return
            await self._run_job(engine_name, spec, request, life, message["reply_channel"], queue_wait_ms)

    async def _run_job(
        self,
        engine_name: str,
        spec: ModelSpec,
        request: GenerationRequest,
        life: RequestLifecycle,
        reply: str,
        queue_wait_ms: float,
    ) -> None:
        """Stream the job's replies; failures become a `job.error` reply and the request's outcome."""
        layer = get_channel_layer()
        task = asyncio.current_task()
        if task is None:  # never: WorkerRuntime.run_job runs every job as a task of the engine loop
            raise RuntimeError("a job must run in a task, so that it can be cancelled")
        self.jobs[request.request_id] = task
        self.running[spec.name] += 1
        try:
            await layer.send(
                reply,
                {
                    "type": protocol.JOB_STARTED,
                    "worker": self.worker_id,
                    "control": self.control_channel,
                    "queue_wait_ms": queue_wait_ms,
                },
            )
            async with asyncio.timeout(JOB_TIME_LIMIT_SECONDS):
                await self._stream(engine_name, spec, request, life, lambda m: layer.send(reply, m))
        except asyncio.CancelledError:
            # Cancelled by its client (through the control channel) or by shutdown: the job
            # ends here and is recorded as such; the thread that waits on it goes on.
            life.cancelled()
            if task.cancelling():
                task.uncancel()
        except EngineError as exc:
            life.failed(error_info(exc))
            await _send_quietly(layer, reply, {"type": protocol.JOB_ERROR, "error": protocol.error_to_dict(exc)})
        except Exception as exc:
            logger.exception("job %s failed", request.request_id)
            crashed: EngineError
            if isinstance(exc, (RedisError, OSError)):  # infrastructure, not the engine: retryable
                crashed = EngineUnavailableError(f"the worker lost Redis: {exc}")
            else:
                crashed = EngineError(f"worker failed: {exc}")
            life.failed(error_info(crashed))
            await _send_quietly(layer, reply, {"type": protocol.JOB_ERROR, "error": protocol.error_to_dict(crashed)})
        finally:
            self.jobs.pop(request.request_id, None)
            self.running[spec.name] -= 1

    async def _stream(
        self, engine_name: str, spec: ModelSpec, request: GenerationRequest, life: RequestLifecycle, send: SendReply
    ) -> None:
        produced: asyncio.Queue[Chunk | BaseException] = asyncio.Queue()

        async def pump() -> None:
            try:
                async with aclosing(self.host.generate(engine_name, spec, request)) as chunks:
                    async for chunk in chunks:
                        produced.put_nowait(chunk)
            except BaseException as exc:  # handed to the sender, which re-raises it
                produced.put_nowait(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise

        pump_task = asyncio.create_task(pump())
        try:
            while True:
                batch = [await produced.get()]
                while not produced.empty() and len(batch) < MAX_BATCH:
                    batch.append(produced.get_nowait())
                failure = next((item for item in batch if isinstance(item, BaseException)), None)
                chunks = [item for item in batch if not isinstance(item, BaseException)]
                final = next((c for c in chunks if c.finish_reason is not None), None)
                for chunk in chunks:
                    life.first_token()
                    life.streamed(len(chunk.token_ids))
                if final is not None:
                    # Record before the last send, so the record exists when the client's answer does.
                    life.succeeded(final)
                    await life.settle()
                if chunks:
                    await send({"type": protocol.JOB_CHUNKS, "chunks": [protocol.chunk_to_dict(c) for c in chunks]})
                if failure is not None:
                    raise failure
                if final is not None:
                    return
        finally:
            pump_task.cancel()
            await asyncio.gather(pump_task, return_exceptions=True)


async def _send_quietly(layer: BaseChannelLayer, channel: str, message: dict[str, Any]) -> None:
    try:
        await layer.send(channel, message)
    except Exception:
        logger.warning("could not send %s to %s", message.get("type"), channel, exc_info=True)
