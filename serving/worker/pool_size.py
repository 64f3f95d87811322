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


# Models a reconcile-mode worker sizes its pool for when MAX_LOADED_MODELS sets no limit.
UNLIMITED_MODELS_POOL_ESTIMATE = 4


def reconcile_pool_concurrency(requested: int | None, max_loaded_models: int) -> tuple[int, str]:
    """The pool's size for a worker that loads what the deployments place on it, and its log line.

    Celery's thread pool has a fixed size, made before any model is placed here, so it cannot be
    one thread per slot of the engines loaded now: they change at run time. It is sized for as
    many models as this worker may hold (MAX_LOADED_MODELS, or an estimate when unlimited), at the
    largest default number of slots each. While fewer slots are loaded, the extra jobs wait in
    the engines' own admission queues (bounded by `max_waiting`) instead of in Redis. An explicit
    --concurrency wins.
    """
    if requested:
        return requested, f"pool concurrency {requested} from --concurrency (models are loaded as the deployments ask)"
    models = max_loaded_models or UNLIMITED_MODELS_POOL_ESTIMATE
    size = models * UNCOUNTED_ENGINE_SLOTS
    basis = (
        f"MAX_LOADED_MODELS {max_loaded_models}"
        if max_loaded_models
        else f"{UNLIMITED_MODELS_POOL_ESTIMATE} models (MAX_LOADED_MODELS sets no limit)"
    )
    return size, (
        f"pool concurrency {size} = {basis} x {UNCOUNTED_ENGINE_SLOTS} slots: models are loaded as the "
        f"deployments ask, so the pool is sized for the most this worker may hold; set --concurrency to change it"
    )
