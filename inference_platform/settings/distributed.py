"""Distributed mode: REDIS_URL set means Celery queues, the Redis channel layer and limits shared by every process."""

from redis.exceptions import ConnectionError as RedisConnectionError

from .environment import env

REDIS_URL = env("REDIS_URL")
# Bound on every Redis call from the web side, so an outage is a quick 503, not a hang.
REDIS_TIMEOUT_SECONDS = env("REDIS_TIMEOUT_SECONDS")
# Pooled Redis connections go stale when Redis restarts: ping idle ones before use and
# retry a command once on a fresh connection, so service recovers by itself.
REDIS_CONNECTION_OPTIONS = {
    "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
    "health_check_interval": 2,
    "retry_on_error": [RedisConnectionError],
}
DISTRIBUTED = bool(REDIS_URL)
