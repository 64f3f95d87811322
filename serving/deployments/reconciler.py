"""One engine host converging, live, on its part of the deployments.

Every RECONCILE_SECONDS, and at once when a deployment event arrives (an edit in the admin, a
request waiting for an on-demand model), the reconciler reads the database, plans (placement),
and then acts on its own host only:

1. copies that are not its part any more go first (room for what comes): the gateway stops
   taking their jobs, their requests finish, they unload, and their Replica rows go;
2. copies it should hold load, and copies whose version changed (source, engine options,
   context, slots, revision) reload rolling: the new one is ready before the old one drains.

The host writes its own Replica rows (loading, ready, draining, failed with the error, when each
changed) and the list of models it serves, which web processes route by.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import psutil
import redis
from django.conf import settings
from django.db import close_old_connections

from engines.host import CopyInfo, EngineHost
from models_registry import deployment_events
from models_registry.models import Replica, ServedModel, WorkerRegistration
from models_registry.selectors import live_workers
from models_registry.services import deployments as deployment_services
from models_registry.services import workers as worker_services

from ..route import Route, route_for
from . import snapshot
from .placement import CopyView, plan

logger = logging.getLogger(__name__)

State = Replica.State
# After a failed load, the same version is tried again no sooner than this.
RETRY_FAILED_LOAD_SECONDS = 30.0


class Gateway(Protocol):
    """How jobs reach this host's copies (a worker's Celery queues; nothing in embedded mode)."""

    def open(self, model_name: str) -> None:
        """Start taking jobs for the model: its copy is ready."""

    def close(self, model_name: str) -> None:
        """Take no new jobs for the model: its copy is about to drain."""


class NoGateway:
    """Embedded mode: requests reach the host directly."""

    def open(self, model_name: str) -> None:
        pass

    def close(self, model_name: str) -> None:
        pass


class Reconciler:
    """Converges `host` on what the deployments ask of the worker `worker_id`.

    `pinned`: a worker started with --models holds exactly those models, outside placement
    (an edit still reloads them).
    """

    def __init__(
        self,
        *,
        host: EngineHost,
        worker_id: str,
        gateway: Gateway | None = None,
        pinned: list[str] | None = None,
        on_pass: Callable[[], None] | None = None,
    ) -> None:
        self.host = host
        self.worker_id = worker_id
        self.gateway: Gateway = gateway or NoGateway()
        self.pinned = pinned
        self._on_pass = on_pass  # e.g. the embedded host's heartbeat
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._stop_listening: Callable[[], None] | None = None
        self._pubsub_thread: threading.Thread | None = None
        self._unload_now: set[str] = set()
        self._failed: dict[str, tuple[str, float]] = {}  # model -> (version, when it failed)
        self._open: set[str] = set()
        self._reported: dict[str, str] | None = None
        self._lock = threading.Lock()  # one pass at a time (the loop, and callers such as tests)

    # --- running ---

    def start(self) -> None:
        """Reconcile on a thread of its own, waking on deployment events."""
        self._stop_listening = deployment_events.listen(self._on_event)
        if settings.REDIS_URL:
            self._pubsub_thread = threading.Thread(target=self._listen_to_redis, name="deployment-events", daemon=True)
            self._pubsub_thread.start()
        self._thread = threading.Thread(target=self._loop, name="reconciler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop reconciling; the host keeps what it holds (its owner unloads it)."""
        self._stopping.set()
        self._wake.set()
        if self._stop_listening is not None:
            self._stop_listening()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def wake(self) -> None:
        """Reconcile now rather than at the next period."""
        self._wake.set()

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("kind") == "unload" and event.get("model"):
            with self._lock:
                self._unload_now.add(event["model"])
        self.wake()

    def _listen_to_redis(self) -> None:
        while not self._stopping.is_set():
            try:
                client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=settings.REDIS_TIMEOUT_SECONDS)
                # redis-py's pubsub() is untyped.
                with client, client.pubsub(ignore_subscribe_messages=True) as pubsub:  # type: ignore[no-untyped-call]
                    pubsub.subscribe(deployment_events.CHANNEL)
                    while not self._stopping.is_set():
                        message = pubsub.get_message(timeout=1.0)
                        if message and message.get("type") == "message":
                            self._on_event(json.loads(message["data"]))
            except (redis.RedisError, OSError, ValueError) as exc:
                logger.warning("deployment events: %s; listening again in a second", exc)
                self._stopping.wait(1.0)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                self.reconcile_once()
            except Exception:
                logger.exception("reconciling deployments failed; trying again")
            finally:
                close_old_connections()
            self._wake.wait(settings.RECONCILE_SECONDS)

    # --- one pass ---

    def reconcile_once(self) -> None:
        """Read the deployments, plan, and converge this host on its part (blocking)."""
        with self._lock:
            if self._on_pass is not None:
                self._on_pass()
            worker_services.workers_mark_silent_dead()
            deployment_services.replicas_of_dead_workers_remove()
            models = snapshot.enabled_models()
            me = WorkerRegistration.objects.filter(worker_id=self.worker_id).first()
            desired = self._desired(models, me)
            for name in sorted(set(self.host.copies()) - desired):
                self._drop(name)
            for name in sorted(desired):
                self._ensure(models[name])
            self._report(me)

    def _desired(self, models: dict[str, ServedModel], me: WorkerRegistration | None) -> set[str]:
        unload_now, self._unload_now = self._unload_now, set()
        for name in unload_now & set(self.host.copies()):
            self._drop(name)
        if self.pinned is not None:
            return {name for name in self.pinned if name in models}
        if me is None or me.drained:
            return set()
        now = time.time()
        others = [w for w in live_workers() if w.worker_id != self.worker_id]
        hosts = [*snapshot.host_views(others), snapshot.host_view(me, self._own_copies(models))]
        return plan(snapshot.deployment_views(models), hosts, now=now).for_host(self.worker_id)

    def _own_copies(self, models: dict[str, ServedModel]) -> dict[str, CopyView]:
        """This host's copies as they are now (fresher than its rows)."""
        memory = dict(
            Replica.objects.filter(worker__worker_id=self.worker_id, memory_bytes__gt=0).values_list(
                "model__name", "memory_bytes"
            )
        )
        return {
            name: CopyView(
                busy=info.in_flight > 0,
                last_used=info.last_used,
                loaded_at=info.loaded_at,
                memory_bytes=memory.get(name) or 0,
            )
            for name, info in self.host.copies().items()
            if name in models
        }

    def _ensure(self, model: ServedModel) -> None:
        route = route_for(model)
        version = route.version
        held = self.host.copies().get(model.name)
        if held is not None and held.version == version:
            self._open_gateway(model.name)
            return
        failed = self._failed.get(model.name)
        if failed and failed[0] == version and time.monotonic() - failed[1] < RETRY_FAILED_LOAD_SECONDS:
            return
        self._load(model, route, version, replacing=held.version if held else None)

    def _load(self, model: ServedModel, route: Route, version: str, *, replacing: str | None) -> None:
        name = model.name
        self._set_state(name, version, route.engine, State.LOADING)
        before = _rss()
        try:
            self.host.ensure_loaded(route.engine, route.spec, version=version)
        except Exception as exc:
            logger.warning("could not load model %s: %s", name, exc)
            self._failed[name] = (version, time.monotonic())
            self._set_state(name, version, route.engine, State.FAILED, error=str(exc))
            return
        self._failed.pop(name, None)
        grown = max(0, _rss() - before)
        self._set_state(name, version, route.engine, State.READY, memory_bytes=grown or None)
        if replacing is not None and replacing != version:
            # The host has swapped: new requests reach the new copy; the old one drains by itself
            # and its row goes once it is unloaded (_report).
            self._set_state(name, replacing, route.engine, State.DRAINING)
        self._open_gateway(name)
        if model.on_demand:
            deployment_services.served_model_demand_met(model_name=name)
        logger.info("model %s ready on %s (%s)", name, self.worker_id, "reloaded" if replacing else "loaded")

    def _drop(self, name: str) -> None:
        held = self.host.copies().get(name)
        if held is None:
            return
        self._close_gateway(name)
        self._set_state(name, held.version, held.engine_name, State.DRAINING)
        # An idle copy unloads here and now; one with requests running drains on a thread of its
        # own, so the pass goes on (its row goes once it is unloaded: _sync_rows).
        self.host.unload(name, wait=False)
        if (name, held.version) not in self.host.retiring():
            self._remove_row(name, held.version)
            logger.info("model %s unloaded from %s", name, self.worker_id)
        else:
            logger.info("model %s draining on %s", name, self.worker_id)

    def _open_gateway(self, name: str) -> None:
        if name not in self._open:
            self.gateway.open(name)
            self._open.add(name)

    def _close_gateway(self, name: str) -> None:
        if name in self._open:
            self.gateway.close(name)
            self._open.discard(name)

    def _report(self, me: WorkerRegistration | None) -> None:
        """The models served here (web processes route by them), each copy's last use, and a
        drain's state."""
        copies = self.host.copies()
        engines = {name: info.engine_name for name, info in copies.items()}
        if engines != self._reported:
            worker_services.worker_set_hosted(worker_id=self.worker_id, engines=engines)
            self._reported = engines
        self._sync_rows(copies)
        deployment_services.replicas_touch(
            worker_id=self.worker_id,
            last_used={name: _datetime(info.last_used) for name, info in copies.items() if info.last_used},
        )
        if me is not None and me.state != WorkerRegistration.State.DEAD:
            wanted_state = WorkerRegistration.State.DRAINING if me.drained else WorkerRegistration.State.READY
            if me.state != wanted_state and me.state in (
                WorkerRegistration.State.READY,
                WorkerRegistration.State.DRAINING,
            ):
                worker_services.worker_set_state(worker_id=self.worker_id, state=wanted_state)

    def _sync_rows(self, copies: dict[str, CopyInfo]) -> None:
        """Make this host's Replica rows say what it holds: copies loaded outside a pass (an
        embedded request's) get a row, unloaded ones lose theirs; failed loads stay on view."""
        current = {(name, info.version): info for name, info in copies.items()}
        retiring = self.host.retiring()
        loading = self.host.loading()
        seen = set()
        rows = Replica.objects.filter(worker__worker_id=self.worker_id).values_list("model__name", "revision", "state")
        for name, version, state in rows:
            key = (name, version)
            seen.add(key)
            if key in current:
                if state != State.READY:
                    self._set_state(name, version, current[key].engine_name, State.READY)
            elif key in retiring:
                if state != State.DRAINING:
                    self._set_state(name, version, "", State.DRAINING)
            elif state != State.FAILED and name not in loading:
                self._remove_row(name, version)
        for (name, version), info in current.items():
            if (name, version) not in seen:
                self._set_state(name, version, info.engine_name, State.READY)

    def _set_state(self, name: str, version: str, engine: str, state: str, **fields: Any) -> None:
        try:
            deployment_services.replica_set_state(
                worker_id=self.worker_id, model_name=name, revision=version, engine=engine, state=state, **fields
            )
        except Exception:  # the row is for people; serving goes on without it
            logger.warning("could not record model %s as %s", name, state, exc_info=True)

    def _remove_row(self, name: str, version: str | None) -> None:
        try:
            deployment_services.replica_remove(worker_id=self.worker_id, model_name=name, revision=version)
        except Exception:
            logger.warning("could not remove the row of model %s", name, exc_info=True)


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


def _datetime(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, tz=dt.UTC)
