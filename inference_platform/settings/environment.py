"""The one `env` object every setting is read through (django-environ), and where the project lives."""

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parents[2]


class _Env(environ.Env):
    """django-environ's Env, whose failed casts name the variable: a bare ValueError ("invalid
    literal for int()") named none, and start-up printed a traceback instead of one line."""

    def get_value(self, var, cast=None, default=environ.Env.NOTSET, parse_default=False):
        try:
            return super().get_value(var, cast=cast, default=default, parse_default=parse_default)
        except ValueError as exc:
            raise ImproperlyConfigured(f"{var}={self.ENVIRON.get(var, '')!r} is not valid: {exc}") from exc


env = _Env(
    DEBUG=(bool, True),
    HOST=(str, "0.0.0.0"),
    PORT=(int, 8000),
    ALLOWED_HOSTS=(list, ["*"]),
    REDIS_URL=(str, ""),
    INFERENCE_ENGINE=(str, "auto"),
    BUNDLED_MODEL_NAME=(str, "smollm2"),
    BUNDLED_MODEL_CONTEXT=(int, 2048),
    PRELOAD_MODELS=(bool, True),
    LOG_LEVEL=(str, "INFO"),
    LOG_PROMPTS=(bool, False),
    ADMIN_USERNAME=(str, "admin"),
    ADMIN_PASSWORD=(str, ""),
    WORKER_MODELS=(str, ""),
    WORKER_LABELS=(list, []),
    MAX_LOADED_MODELS=(int, 0),
    MODEL_MEMORY_BUDGET_MB=(int, 0),
    LOAD_TIMEOUT_SECONDS=(float, 120.0),
    RECONCILE_SECONDS=(float, 2.0),
    MODELS_DIR=(str, ""),
    WORKER_HEARTBEAT_SECONDS=(float, 1.0),
    WORKER_DEAD_AFTER_SECONDS=(float, 5.0),
    QUEUE_TIMEOUT_SECONDS=(float, 300.0),
    REDIS_TIMEOUT_SECONDS=(float, 2.0),
    SYSTEM_SAMPLE_SECONDS=(float, 5.0),
    METRICS_ACCESS=(str, ""),
    METRICS_TOKEN=(str, ""),
    RECORD_RETENTION_DAYS=(int, 30),
    RECORD_RETENTION_BATCH_SIZE=(int, 5000),
    RESPONSE_RETENTION_DAYS=(int, 30),
    MAX_REQUEST_BODY_BYTES=(int, 4 * 1024 * 1024),
    DATABASE_POOL_SIZE=(int, 10),
    SECURE_PROXY_SSL_HEADER=(bool, False),
    CSRF_TRUSTED_ORIGINS=(list, []),
    SECURE_SSL_REDIRECT=(bool, False),
    SECURE_HSTS_SECONDS=(int, 0),
    SECURE_HSTS_INCLUDE_SUBDOMAINS=(bool, False),
    SECURE_HSTS_PRELOAD=(bool, False),
    SESSION_COOKIE_SECURE=(bool, False),
    CSRF_COOKIE_SECURE=(bool, False),
)
if (BASE_DIR / ".env").exists():  # otherwise django-environ logs that it is missing, on every start
    environ.Env.read_env(BASE_DIR / ".env")
