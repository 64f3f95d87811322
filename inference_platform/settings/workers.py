"""Celery and its workers: the broker, the queues' fairness, and how workers report they are alive."""

from .distributed import REDIS_TIMEOUT_SECONDS, REDIS_URL
from .environment import env

# Distributed mode: Celery workers host the engines (see serving/worker/). Which models a worker
# hosts: a comma-separated list or "all" enabled ones; `--models` on the command line wins.
WORKER_MODELS = env("WORKER_MODELS")
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
