"""How many jobs a worker takes at once: its engines' slots.

A job holds one Celery pool thread while it runs, and the worker pops a job from Redis only
for a free thread (CELERY_WORKER_DISABLE_PREFETCH). With as many threads as its engines have
slots, a worker takes a job only when an engine can start it at once, and every other job
waits in Redis for whichever worker frees a slot first.
"""

from __future__ import annotations

from engines.base import Engine

# Threads for an engine that sets no number of slots (echo; upstream and vLLM, whose server
# batches): as many as the llama.cpp engine's largest default.
UNCOUNTED_ENGINE_SLOTS = 16


def engine_slots(engine: Engine) -> int | None:
    """Requests the loaded engine runs at once (llama.cpp: its `parallel`), or None if it sets no number."""
    return engine.slots


def pool_concurrency(slots: dict[str, int | None], requested: int | None) -> tuple[int, str]:
    """The pool's size for engines with these slots per model, and the log line that explains it.

    Without --concurrency (or with 0) the pool has one thread per slot. An explicit --concurrency may
    lower that; above it, it is lowered to the slots, since the extra jobs would only wait
    inside this worker's engines instead of in Redis, where any worker could take them.
    """
    total = sum(UNCOUNTED_ENGINE_SLOTS if n is None else n for n in slots.values())
    described = ", ".join(
        f"{model} {'(no fixed number) ' + str(UNCOUNTED_ENGINE_SLOTS) if n is None else n}"
        for model, n in slots.items()
    )
    if not requested:  # --concurrency absent, or 0
        return total, f"pool concurrency {total} = engine slots ({described})"
    if requested > total:
        return total, (
            f"pool concurrency {total} = engine slots ({described}); --concurrency {requested} "
            f"lowered so that jobs beyond the slots wait in Redis, not in this worker"
        )
    return requested, f"pool concurrency {requested} from --concurrency (engine slots: {described})"
