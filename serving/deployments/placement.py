"""Placement: from the deployments and the engine hosts, which host should hold which model.

A pure function of what the database says, so every host computes the same plan and each one
converges on its own part of it (serving.deployments.reconciler). The order of precedence:

1. models with replicas, onto hosts allowed by their placement, keeping copies where they are;
2. on-demand copies in use: they stay where they are;
3. on-demand models wanted (a request or the admin's load action is waiting for them);
4. on-demand copies idle within their keep-alive, most recently used first, where they are.

Room on a host is its maximum number of loaded models and its memory budget; whatever of (4)
no longer fits is evicted, least recently used first. An idle copy past its keep-alive is
dropped. A host started with pinned models (`--models`) is outside placement altogether.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

NEW_COPY_GRACE_SECONDS = 15.0


@dataclasses.dataclass(frozen=True)
class CopyView:
    """A copy a host holds now (loading or ready)."""

    busy: bool = False  # requests running on it
    last_used: float | None = None  # epoch seconds; None: never used (just loaded)
    loaded_at: float = 0.0  # epoch seconds
    memory_bytes: int = 0


@dataclasses.dataclass(frozen=True)
class HostView:
    """An engine host that may hold copies: a live worker, or the embedded process."""

    worker_id: str
    host: str = ""
    labels: frozenset[str] = frozenset()
    drained: bool = False
    pinned: bool = False  # started with --models: it places nothing
    max_loaded_models: int = 0  # 0: no limit
    memory_budget_bytes: int = 0  # 0: no budget
    copies: Mapping[str, CopyView] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class DeploymentView:
    """What one enabled served model asks for."""

    name: str
    replicas: int = 1  # 0: on demand
    label: str = ""
    host: str = ""
    keep_alive_seconds: int | None = 300  # None: never unload
    wanted: bool = False  # on demand: a request or the admin asks for it now
    memory_bytes: int = 0  # a copy's expected memory


@dataclasses.dataclass
class Plan:
    """Model names each host should hold, and why a model that should be placed is not."""

    assignments: dict[str, set[str]]
    unplaced: dict[str, str]

    def for_host(self, worker_id: str) -> set[str]:
        return self.assignments.get(worker_id, set())

    def hosts_of(self, model: str) -> list[str]:
        return sorted(w for w, names in self.assignments.items() if model in names)


def plan(deployments: Iterable[DeploymentView], hosts: Iterable[HostView], *, now: float) -> Plan:
    """Place every deployment on the hosts; see the module docstring for the order."""
    deployments = sorted(deployments, key=lambda d: d.name)
    placeable = {h.worker_id: h for h in hosts if not h.pinned and not h.drained}
    result = Plan(assignments={w: set() for w in placeable}, unplaced={})
    used = {w: 0 for w in placeable}  # memory assigned so far

    def eligible(d: DeploymentView) -> list[HostView]:
        return [h for h in placeable.values() if allows(d, h)]

    def fits(h: HostView, d: DeploymentView) -> bool:
        count_ok = not h.max_loaded_models or len(result.assignments[h.worker_id]) < h.max_loaded_models
        memory = h.copies[d.name].memory_bytes if d.name in h.copies else d.memory_bytes
        memory_ok = not h.memory_budget_bytes or used[h.worker_id] + memory <= h.memory_budget_bytes
        return count_ok and memory_ok

    def assign(h: HostView, d: DeploymentView) -> None:
        result.assignments[h.worker_id].add(d.name)
        used[h.worker_id] += h.copies[d.name].memory_bytes if d.name in h.copies else d.memory_bytes

    def place(d: DeploymentView, count: int, *, move: bool) -> None:
        candidates = eligible(d)
        if not candidates:
            result.unplaced[d.name] = _no_host_reason(d)
            return
        # Where it is already first (no reload), then the emptiest hosts, then a stable order.
        candidates.sort(key=lambda h: (d.name not in h.copies, len(result.assignments[h.worker_id]), h.worker_id))
        placed = 0
        for h in candidates:
            if placed == count:
                break
            if not move and d.name not in h.copies:
                continue
            if fits(h, d):
                assign(h, d)
                placed += 1
        if placed < count and move:
            result.unplaced[d.name] = (
                f"{placed} of {count} copies placed: every worker that may host `{d.name}` is full "
                f"(its maximum of loaded models or its memory budget), with copies in use"
            )

    on_demand = [d for d in deployments if d.replicas == 0]
    for d in deployments:
        if d.replicas > 0:
            place(d, d.replicas, move=True)
    held = {d.name: _holders(d, placeable.values()) for d in on_demand}
    for d in on_demand:  # copies in use stay where they are, room or not
        for h in placeable.values():
            if d.name in h.copies and h.copies[d.name].busy:
                assign(h, d)
    for d in on_demand:
        already = any(d.name in result.assignments[w] for w in result.assignments)
        if d.wanted and not already:
            place(d, 1, move=True)
    idle = [
        (copy.last_used or copy.loaded_at, d, h)
        for d in on_demand
        for h, copy in held[d.name]
        if not copy.busy and d.name not in result.assignments[h.worker_id] and not _expired(d, copy, now)
    ]
    for _, d, h in sorted(idle, key=lambda item: -item[0]):  # the most recently used keeps its room
        if allows(d, h) and fits(h, d):
            assign(h, d)
    return result


def allows(d: DeploymentView, h: HostView) -> bool:
    """Whether the deployment's placement (label, host) lets the host hold it; room aside."""
    return (not d.label or d.label in h.labels) and (not d.host or d.host == h.host)


def _holders(d: DeploymentView, hosts: Iterable[HostView]) -> list[tuple[HostView, CopyView]]:
    return [(h, h.copies[d.name]) for h in hosts if d.name in h.copies]


def _expired(d: DeploymentView, copy: CopyView, now: float) -> bool:
    """Idle past its keep-alive (0: as soon as its requests end; None: never).

    A copy not used yet has NEW_COPY_GRACE_SECONDS at least: the request it was loaded for is
    on its way to it.
    """
    if d.wanted or d.keep_alive_seconds is None:
        return False
    if copy.last_used is None:
        return now - copy.loaded_at >= max(d.keep_alive_seconds, NEW_COPY_GRACE_SECONDS)
    return now - copy.last_used >= d.keep_alive_seconds


def _no_host_reason(d: DeploymentView) -> str:
    wants = [f"label `{d.label}`" if d.label else "", f"host `{d.host}`" if d.host else ""]
    wanted = " and ".join(w for w in wants if w)
    if wanted:
        return f"no live worker that takes new models has {wanted}, as the placement of `{d.name}` asks"
    return "no live worker takes new models (none is running, or all are drained or pinned with --models)"
