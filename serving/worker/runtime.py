"""The engine host inside a Celery worker process.

One asyncio loop on its own thread runs every job of this process (jobs.py), the heartbeat and
the control channel that receives cancellations. Celery's thread-pool slots only wait on that
loop, which keeps the number of jobs taken at once equal to the pool's concurrency (see
pool_size). A reconciler (serving.deployments.reconciler) loads, reloads and unloads the
host's copies live, and opens or closes their queues through the gateway (queues.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Coroutine
from typing import Any, TypeVar

import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from engines.host import EngineHost
from models_registry.models import ServedModel, WorkerRegistration
from models_registry.services import deployments as deployment_services
from models_registry.services import workers as worker_services

from .. import hosts, protocol
from ..deployments.capacity import host_capacity
from ..deployments.reconciler import Gateway, Reconciler
from ..protocol import liveness_key
from .jobs import JobRunner
from .pool_size import engine_slots

logger = logging.getLogger(__name__)

DB_HEARTBEAT_EVERY = 3  # write the database row every few liveness beats
DRAIN_TIMEOUT_SECONDS = 600  # on shutdown, how long running jobs may take to finish

_T = TypeVar("_T")


def resolve_worker_models(option: str | None) -> list[ServedModel] | None:
    """Models named by --models / WORKER_MODELS ("all" = every enabled one); None when neither
    names any: the worker then holds what the deployments place on it (reconcile mode)."""
    wanted = (option or settings.WORKER_MODELS or "").strip()
    if not wanted:
        return None
    enabled = list(ServedModel.objects.filter(enabled=True))
    if wanted == "all":
        if not enabled:
            raise ValueError("no enabled models to pin this worker to")
        return enabled
    names = [n.strip() for n in wanted.split(",") if n.strip()]
    by_name = {m.name: m for m in enabled}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(f"no enabled model named {', '.join(missing)}")
    return [by_name[n] for n in names]


def resolve_worker_labels(option: str | None) -> list[str]:
    """Placement labels from --labels (comma-separated), else WORKER_LABELS."""
    if option is None:
        return list(settings.WORKER_LABELS)
    return [label.strip() for label in option.split(",") if label.strip()]


class WorkerRuntime:
    """The engine host of one worker process, its jobs, heartbeat and reconciler.

    `models`: pinned to these (loaded by `load`, before the pool is made), or None to hold what
    the deployments place here. `gateway` opens and closes the worker's queues (none: a runtime
    without a Celery consumer, as in tests that hand it jobs directly).
    """

    def __init__(
        self,
        models: list[ServedModel] | None,
        *,
        labels: list[str] | None = None,
        gateway: Gateway | None = None,
    ):
        self.models = models
        self.pinned = models is not None
        self.labels = labels or []
        self.concurrency = 0  # the pool's, known once the engines are loaded
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        # Only the reconciler loads: a job for a model not held here is sent back (see jobs.py).
        self.host = EngineHost(load_on_demand=False)
        self.reconciler = Reconciler(
            host=self.host,
            worker_id=self.worker_id,
            gateway=gateway,
            pinned=[m.name for m in models] if models is not None else None,
        )
        self.loop = asyncio.new_event_loop()
        self.job_runner = JobRunner(self.host, self.worker_id, lambda: self._client)
        self._thread = threading.Thread(target=self.loop.run_forever, name="engine-loop", daemon=True)
        self._heartbeat: asyncio.Task[None] | None = None
        self._control: asyncio.Task[None] | None = None
        self._redis: aioredis.Redis | None = None
        self._reconciling = False
        self._reconciling_lock = threading.Lock()
        self._draining: threading.Thread | None = None

    @property
    def jobs(self) -> dict[str, asyncio.Task[Any]]:
        """Jobs running here by request id: cancelled through the control channel."""
        return self.job_runner.jobs

    @property
    def running(self) -> Counter[str]:
        """Jobs per model, published with each heartbeat for /metrics."""
        return self.job_runner.running

    @property
    def control_channel(self) -> str:
        """Where this worker's jobs are cancelled; the job runner tells each job's client."""
        return self.job_runner.control_channel

    @property
    def _client(self) -> aioredis.Redis:
        """The long-lived Redis client, open from `start` until `stop`."""
        if self._redis is None:
            raise RuntimeError(f"worker {self.worker_id} is not started: it has no Redis client")
        return self._redis

    # --- lifecycle (called from the Celery bootstep, on the worker's main thread) ---

    def load(self) -> dict[str, int | None]:
        """Register (state loading) and, when pinned, load every pinned model; returns each loaded
        model's engine slots. Blocks."""
        hosts.start_sampling(role="worker", name=self.worker_id)
        worker_services.worker_register(
            worker_id=self.worker_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            models=[],
            concurrency=self.concurrency,
            labels=self.labels,
            capacity=host_capacity(pinned=self.pinned),
        )
        if self.models is None:
            return {}
        # One pass loads the pinned models, writes their rows and opens their queues; the worker
        # is not started yet, so nothing else runs meanwhile.
        self.reconciler.reconcile_once()
        missing = {
            m.name: self.host.load_error(m.name) or "not loaded" for m in self.models if not self.host.has(m.name)
        }
        if missing:
            error = "; ".join(f"{name}: {why}" for name, why in missing.items())
            worker_services.worker_set_state(worker_id=self.worker_id, state=WorkerRegistration.State.DEAD, error=error)
            raise RuntimeError(f"could not load {error}")
        slots: dict[str, int | None] = {}
        for model in self.models:
            engine = self.host.engine_for(model.name)
            slots[model.name] = engine_slots(engine) if engine is not None else None
        return slots

    def start(self, concurrency: int) -> None:
        """Start the engine loop, report ready with the pool's concurrency, and reconcile from now on."""
        self.concurrency = concurrency
        self._thread.start()
        self._run(self._open())
        worker_services.worker_set_state(
            worker_id=self.worker_id, state=WorkerRegistration.State.READY, concurrency=concurrency
        )
        self.reconciler.start()
        self._reconciling = True
        held = ", ".join(f"{n} on {c.engine_name}" for n, c in self.host.copies().items())
        logger.info(
            "worker %s ready (labels: %s): %s",
            self.worker_id,
            ", ".join(self.labels) or "none",
            held or "no model yet; it loads what the deployments place on it",
        )

    def drain(self) -> None:
        """Stop advertising this worker; jobs already running go on.

        The reconciler stops first: it would otherwise set a worker that is not drained from the
        admin back to ready, and load or unload models while the worker shuts down. Celery calls
        this from its signal handler, which must not wait for the reconciler's pass to end (it
        may wait on the consumer's own loop, which the handler interrupted): a thread does it.
        """
        if self._draining is None:
            self._draining = threading.Thread(target=self._drain, name="drain", daemon=True)
            self._draining.start()

    def _drain(self) -> None:
        try:
            self._stop_reconciling()
            worker_services.worker_set_state(worker_id=self.worker_id, state=WorkerRegistration.State.DRAINING)
        except Exception:
            logger.warning("could not mark worker draining", exc_info=True)

    def stop(self) -> None:
        """Let running jobs finish (the consumer has stopped taking new ones), then deregister and unload.

        Celery stops this step before it stops the pool, so the jobs' threads are still waiting
        on this loop here: tearing it down first would fail their clients and hang the pool.
        """
        self._stop_reconciling()
        if self._draining is not None:  # its state must not land after the final one
            self._draining.join(timeout=60)
        try:
            self._run(self._wait_for_jobs(), timeout=None)
            self._run(self._close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            worker_services.worker_set_state(worker_id=self.worker_id, state=WorkerRegistration.State.DEAD)
            deployment_services.replicas_of_dead_workers_remove()  # its copies go with it
            self.host.shutdown()
            hosts.stop_sampling()

    def _stop_reconciling(self) -> None:
        with self._reconciling_lock:  # whoever comes second waits for the first to finish stopping it
            if self._reconciling:
                self.reconciler.stop()
                self._reconciling = False

    def _run(self, coroutine: Coroutine[Any, Any, _T], timeout: float | None = 30) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def _open(self) -> None:
        self._redis = protocol.redis_client(timeout=None)  # long-lived: waits out slow calls
        await self._beat()
        self.job_runner.control_channel = await get_channel_layer().new_channel()
        self._heartbeat = asyncio.create_task(self._heartbeat_loop())
        self._control = asyncio.create_task(self._control_loop())

    async def _wait_for_jobs(self) -> None:
        deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
        while self.jobs and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for task in list(self.jobs.values()):  # past the deadline: cancel, which records them
            task.cancel()

    async def _close(self) -> None:
        for task in (self._heartbeat, self._control):
            if task:
                task.cancel()
        if self._redis is not None:
            await self._redis.delete(liveness_key(self.worker_id))
            await self._redis.aclose()

    async def _beat(self) -> None:
        # The liveness key carries the load per model: /metrics sums it over live workers, and a
        # dead worker's jobs vanish exactly when the worker counts as dead.
        await self._client.set(
            liveness_key(self.worker_id),
            json.dumps(self.load_report()),
            px=int(settings.WORKER_DEAD_AFTER_SECONDS * 1000),
        )

    def load_report(self) -> dict[str, Any]:
        """Jobs per model, split into those running and those waiting in the engine's admission
        queue, and the KV cells (held, total) of engines that report them (serving.dispatch.distributed.worker_load)."""
        engines = {state["model"]: state for state in self.host.states()}
        waiting = {
            model: engines[model]["num_requests_waiting"] for model in engines if engines[model]["num_requests_waiting"]
        }
        running = {
            model: count - waiting.get(model, 0)
            for model, count in self.running.items()
            if count - waiting.get(model, 0) > 0
        }
        kv_cache = {
            model: (state["kv_cache_tokens"], state["kv_cache_capacity"])
            for model, state in engines.items()
            if state.get("kv_cache_capacity")
        }
        return {"running": running, "waiting": waiting, "kv_cache": kv_cache}

    async def _heartbeat_loop(self) -> None:
        beats = 0
        while True:
            await asyncio.sleep(settings.WORKER_HEARTBEAT_SECONDS)
            try:
                await self._beat()
                beats += 1
                if beats % DB_HEARTBEAT_EVERY == 0:
                    await sync_to_async(self._db_heartbeat, thread_sensitive=False)()
            except Exception:
                logger.warning("heartbeat failed", exc_info=True)

    def _db_heartbeat(self) -> None:
        worker_services.worker_heartbeat(worker_id=self.worker_id, in_flight=len(self.jobs))
        worker_services.workers_mark_silent_dead()

    async def _control_loop(self) -> None:
        layer = get_channel_layer()
        while True:
            try:
                message = await layer.receive(self.control_channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("control channel failed; retrying", exc_info=True)
                await asyncio.sleep(1)
                continue
            if message.get("type") == protocol.JOB_CANCEL and message.get("request_id") in self.jobs:
                self.jobs[message["request_id"]].cancel()
            else:
                logger.warning("ignoring control message %r", message.get("type"))

    # --- jobs (called from Celery pool threads) ---

    def run_job(self, message: dict[str, Any]) -> None:
        """Blocking: serve one job on the engine loop."""
        self._run(self.job_runner.serve_and_count(message), timeout=None)
