"""Request records stored in batches by one writer thread per process.

Storing each record from its own request cost the web process a thread hop, a new database
connection (Django's connections belong to a thread, and asgiref gives each request a new
one) and a transaction, per request: about a fifth of the CPU of a gateway request. Here a
request queues its record; one long-lived thread with one connection stores whatever has
queued up while it stored the last batch, in one transaction (monitoring.services
.request_records_create). The request waits for that batch on a future, holding no thread
(serving.lifecycle), so its record still exists before the client has its answer. Under load
many requests share a transaction; alone, a request waits no longer than its own insert.

- Exactly one row per request: a record is queued once, and the database keeps the first
  record of an id (a worker and a web process may both report one request).
- None lost on shutdown: the thread is a daemon, so it never holds a process open, and an
  `atexit` hook drains the queue into the database before the interpreter goes.
- A batch that fails (a record the database refuses, a dropped connection) is retried one
  record at a time on a fresh connection, so one bad record costs only itself.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from django.db import connection

from monitoring.services import request_records_create

logger = logging.getLogger(__name__)

# Records per transaction at most: a burst larger than this is stored in several.
MAX_BATCH = 500
# How long the interpreter's exit waits for the last records before it gives up on them.
EXIT_DRAIN_TIMEOUT_S = 60.0

Record = dict[str, Any]


class _Barrier:
    """Queued by flush(): resolved once every record queued before it is stored."""


class _Stop:
    """Queued by close(): the thread stores what came before it, then ends."""


_Item = tuple[Record | _Barrier | _Stop, "Future[None]"]


class RecordWriter:
    """One thread that stores queued records in batches; `submit` never blocks on the database."""

    def __init__(
        self, store: Callable[[list[Record]], object] = request_records_create, max_batch: int = MAX_BATCH
    ) -> None:
        self._store = store
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, record: Record) -> Future[None]:
        """Queue one record; the future is done once it is stored (or its failure logged). Never raises."""
        done: Future[None] = Future()
        self._queue.put((record, done))
        self._ensure_thread()
        return done

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every record submitted before this call is stored; False if `timeout` passed first."""
        if self._thread is None:
            return True
        done: Future[None] = Future()
        self._queue.put((_Barrier(), done))
        self._ensure_thread()
        try:
            done.result(timeout)
        except TimeoutError:
            return False
        return True

    def close(self, timeout: float | None = EXIT_DRAIN_TIMEOUT_S) -> bool:
        """Store everything queued, end the thread and close its connection; a later submit starts a new one.

        Returns False if the records were not all stored within `timeout`.
        """
        with self._lock:
            thread = self._thread
            if thread is None:
                return True
            self._queue.put((_Stop(), Future()))
        thread.join(timeout)
        if thread.is_alive():
            logger.error("request records still unstored after %.0f s at shutdown", timeout or 0)
            return False
        return True

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="request-record-writer", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        try:
            stop = False
            while not stop:
                batch = [self._queue.get()]
                while len(batch) < self._max_batch:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                stop = self._write(batch)
        finally:
            connection.close()  # this thread's own; Django never closes it for us
            with self._lock:
                if self._thread is threading.current_thread():
                    self._thread = None

    def _write(self, batch: list[_Item]) -> bool:
        """Store the batch's records, then resolve its futures; True if it held a stop."""
        records = [item for item, _ in batch if isinstance(item, dict)]
        stop = any(isinstance(item, _Stop) for item, _ in batch)
        try:
            if records:
                self._store_all(records)
        finally:
            for _, done in batch:
                if not done.done():
                    done.set_result(None)
        if stop:
            # Records queued after the stop (a request finishing during shutdown) are stored too.
            leftovers: list[Record] = []
            while True:
                try:
                    item, done = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, dict):
                    leftovers.append(item)
                done.set_result(None)
            if leftovers:
                self._store_all(leftovers)
        return stop

    def _store_all(self, records: list[Record]) -> None:
        try:
            self._store(records)
            return
        except Exception:
            logger.warning(
                "storing %d request records at once failed; storing them one at a time", len(records), exc_info=True
            )
        connection.close()  # a broken connection must not fail every record after it
        for record in records:
            try:
                self._store([record])
            except Exception:
                logger.exception("could not record request %s", record.get("request_id"))
                connection.close()


_writer = RecordWriter()


def record_submit(record: Record) -> Future[None]:
    """Queue one request's record with this process's writer (monitoring.services.request_record_create's fields)."""
    return _writer.submit(record)


def records_flush(timeout: float | None = None) -> bool:
    """Block until every record this process queued so far is stored."""
    return _writer.flush(timeout)


def records_close(timeout: float | None = EXIT_DRAIN_TIMEOUT_S) -> bool:
    """Store every queued record and stop the writer (exit, tests); the next record starts it again."""
    return _writer.close(timeout)


def _new_writer_after_fork() -> None:
    # A forked child (Celery's prefork pool) inherits the queue but not the thread: it gets its own.
    global _writer
    _writer = RecordWriter()


os.register_at_fork(after_in_child=_new_writer_after_fork)
atexit.register(records_close)
