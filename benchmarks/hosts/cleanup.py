"""What runs leave on this machine, and removing it: after a crash, `python -m benchmarks.hosts cleanup`."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from . import network, processes
from .database import DB_PREFIX, drop_database, harness_databases
from .harness import RUNS_DIR, STATE, Harness


def live_runs() -> list[Path]:
    """Run directories whose harness has not been destroyed."""
    return sorted(path.parent for path in RUNS_DIR.glob(f"*/{STATE}")) if RUNS_DIR.exists() else []


def leftovers(run_id: str | None = None) -> dict[str, list]:
    """What a run (every run when `run_id` is None) still holds on this machine: empty lists when clean."""
    databases = harness_databases()
    return {
        "namespaces": network.run_namespaces(run_id),
        "links": network.run_links(run_id),
        "processes": processes.marked_processes(run_id),
        "databases": [d for d in databases if run_id is None or d == f"{DB_PREFIX}{run_id}"],
    }


def cleanup(run_id: str | None = None) -> dict[str, list]:
    """Remove what crashed runs left (one run's, or every run's when `run_id` is None); what was removed."""
    with processes.no_interrupts():
        found = leftovers(run_id)
        for run_dir in live_runs():
            if run_id is None or run_dir.name == run_id or _state_run_id(run_dir) == run_id:
                with contextlib.suppress(Exception):
                    Harness(run_dir).destroy()
        processes.kill_all(processes.marked_processes(run_id))
        network.remove_network(run_id)
        for database in leftovers(run_id)["databases"]:
            drop_database(database)
        return found


def _state_run_id(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / STATE).read_text())["run_id"]
    except (OSError, ValueError, KeyError):
        return None
