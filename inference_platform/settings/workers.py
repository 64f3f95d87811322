"""Celery and its workers: the broker, the queues' fairness, and how workers report they are alive."""

from .distributed import REDIS_TIMEOUT_SECONDS, REDIS_URL
from .environment import env

# Distributed mode: Celery workers host the engines (see serving/worker/). By default a worker
# hosts what the deployments in the admin place on it (serving/deployments). WORKER_MODELS pins a
# worker to a comma-separated list (or "all" enabled models) instead; `--models` wins over it.
WORKER_MODELS = env("WORKER_MODELS")
# Placement: a model with a placement label goes only to workers started with that label.
WORKER_LABELS = [label.strip() for label in env("WORKER_LABELS") if label.strip()]
# Room on each engine host (a worker, or the embedded process): at most this many models loaded
# (0: no limit) and at most this much memory for them (0: no budget). To make room for a model a
# request asks for, the least recently used idle on-demand model is unloaded.
MAX_LOADED_MODELS = env("MAX_LOADED_MODELS")
MODEL_MEMORY_BUDGET_MB = env("MODEL_MEMORY_BUDGET_MB")
# How long a request for an on-demand model waits for a copy to load before a 503.
LOAD_TIMEOUT_SECONDS = env("LOAD_TIMEOUT_SECONDS")
# Engine hosts re-read the deployments this often; a control message wakes them at once on a change.
RECONCILE_SECONDS = env("RECONCILE_SECONDS")
# The admin's model form offers the GGUF files found under this directory (and the bundled model).
MODELS_DIR = env("MODELS_DIR")
# Workers refresh a liveness key this often; one silent for WORKER_DEAD_AFTER_SECONDS is dead.
WORKER_HEARTBEAT_SECONDS = env("WORKER_HEARTBEAT_SECONDS")
WORKER_DEAD_AFTER_SECONDS = env("WORKER_DEAD_AFTER_SECONDS")
# How long a job may wait in its queue for a worker before the client gets a 503.
QUEUE_TIMEOUT_SECONDS = env("QUEUE_TIMEOUT_SECONDS")

CELERY_BROKER_URL = REDIS_URL or "memory://"
# Take a job only when a pool slot is free, so queued jobs stay in Redis for idle workers
# (and survive a worker that dies) instead of waiting prefetched behind a busy one.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_DISABLE_PREFETCH = True
# Ack on start: a job whose worker dies mid-stream has a client that already got an error;
# running it again elsewhere would stream to nobody.
CELERY_TASK_ACKS_LATE = False
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_TIMEOUT = REDIS_TIMEOUT_SECONDS
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
    "socket_timeout": max(REDIS_TIMEOUT_SECONDS, 10.0),  # BRPOP waits up to a few seconds
}
CELERY_TASK_PUBLISH_RETRY = False  # fail fast to a 503 when Redis is down
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
