"""Settings, read from the environment through one `env` object (django-environ).

No environment at all gives the embedded default: SQLite, in-process engine host. DEBUG is on,
except under `manage.py serve` (./run.sh), which manage.py starts with DEBUG off unless asked.
Setting REDIS_URL switches to distributed mode.
"""

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured
from redis.exceptions import ConnectionError as RedisConnectionError

from engines.platform import FORCEABLE_ENGINES
from inference_platform.secret_key import secret_key_from_file

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env(
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
    WORKER_MODELS=(str, "all"),
    WORKER_HEARTBEAT_SECONDS=(float, 1.0),
    WORKER_DEAD_AFTER_SECONDS=(float, 5.0),
    QUEUE_TIMEOUT_SECONDS=(float, 300.0),
    REDIS_TIMEOUT_SECONDS=(float, 2.0),
    SYSTEM_SAMPLE_SECONDS=(float, 5.0),
    METRICS_ACCESS=(str, ""),
    METRICS_TOKEN=(str, ""),
    RECORD_RETENTION_DAYS=(int, 30),
    RECORD_RETENTION_BATCH_SIZE=(int, 5000),
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

# Django's debug pages show settings and URL patterns to anyone: never on a server that is exposed.
DEBUG = env("DEBUG")

HOST = env("HOST")
PORT = env("PORT")
ALLOWED_HOSTS = env("ALLOWED_HOSTS")

INFERENCE_ENGINE = env("INFERENCE_ENGINE")
if INFERENCE_ENGINE not in FORCEABLE_ENGINES:
    raise ImproperlyConfigured(
        f"INFERENCE_ENGINE={INFERENCE_ENGINE!r} is not an engine; choose one of {', '.join(FORCEABLE_ENGINES)}"
    )
BUNDLED_MODEL_NAME = env("BUNDLED_MODEL_NAME")
BUNDLED_MODEL_CONTEXT = env("BUNDLED_MODEL_CONTEXT")
# Load enabled models when the ASGI app starts, so /health turns ready without a request.
PRELOAD_MODELS = env("PRELOAD_MODELS")
# Prompts and completions are never logged unless an operator turns this on.
LOG_PROMPTS = env("LOG_PROMPTS")

# First-run superuser made by `setup_embedded`; a random password is printed if unset.
ADMIN_USERNAME = env("ADMIN_USERNAME")
ADMIN_PASSWORD = env("ADMIN_PASSWORD")

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

# The environment's SECRET_KEY wins. Without one, the processes of one host share a key generated
# once into var/secret_key (mode 0600): the embedded default. A distributed production deployment
# must set it, or each host would sign sessions and CSRF tokens the others reject.
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if DISTRIBUTED and not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set; with REDIS_URL and DEBUG=false all hosts must share one. Generate it with "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(50))'"
        )
    SECRET_KEY = secret_key_from_file(BASE_DIR / "var" / "secret_key")

# HTTPS behind a TLS-terminating reverse proxy (README, "Security"). Trust X-Forwarded-Proto only when
# the proxy sets it and clients cannot reach this server around the proxy.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env("SECURE_PROXY_SSL_HEADER") else None
# The proxy's public origins (https://llm.example.com) when the Host it passes on differs.
CSRF_TRUSTED_ORIGINS = env("CSRF_TRUSTED_ORIGINS")
SECURE_SSL_REDIRECT = env("SECURE_SSL_REDIRECT")
SECURE_REDIRECT_EXEMPT = [r"^health$"]  # health checks probe plain HTTP from inside the host
SECURE_HSTS_SECONDS = env("SECURE_HSTS_SECONDS")
SECURE_HSTS_INCLUDE_SUBDOMAINS = env("SECURE_HSTS_INCLUDE_SUBDOMAINS")
SECURE_HSTS_PRELOAD = env("SECURE_HSTS_PRELOAD")
SESSION_COOKIE_SECURE = env("SESSION_COOKIE_SECURE")
CSRF_COOKIE_SECURE = env("CSRF_COOKIE_SECURE")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's JS and CSS served locally: no CDN, works offline
    "channels",
    "models_registry",
    "api",
    "monitoring",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Serves the admin's static files when DEBUG is off (daphne serves none itself).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "inference_platform.urls"
ASGI_APPLICATION = "inference_platform.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

VAR_DIR = BASE_DIR / "var"  # the embedded SQLite file
VAR_DIR.mkdir(exist_ok=True)
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Many requests finish at once, and each writes its record and totals in one transaction.
    # SQLite allows one writer: WAL lets readers (key lookups, dashboards) go on beside it, and
    # the busy timeout makes writers queue for it. IMMEDIATE is what makes them queue: a
    # deferred transaction starts as a reader, and under WAL a reader whose snapshot another
    # writer has since moved past cannot become a writer, so SQLite fails it at once
    # ("database is locked") without waiting, and the record was lost. synchronous=NORMAL is
    # WAL's usual pairing: commits stay atomic and the file consistent; a power cut (not a
    # crash) may lose the last commits, in exchange for one fsync per checkpoint, not per commit.
    DATABASES["default"].setdefault("OPTIONS", {}).update({
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    })
    # Tests get a file too: an in-memory database fails concurrent writes at once ("table is
    # locked") instead of waiting, which would drop records of requests finishing together.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Each process borrows from its own pool of at most DATABASE_POOL_SIZE connections. A request
    # holds one only for its key lookup and its record, so a burst of arrivals queues for the pool
    # (up to 30 s) instead of opening one connection each and passing PostgreSQL's max_connections.
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1, "max_size": env("DATABASE_POOL_SIZE"), "timeout": 30,
    }

if DISTRIBUTED:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # Replies are read as they arrive; capacity only guards against a vanished reader.
            "CONFIG": {
                "hosts": [{
                    "address": REDIS_URL,
                    **REDIS_CONNECTION_OPTIONS,
                    # Longer than channels-redis's 5 s blocking pop, which would otherwise race it.
                    "socket_timeout": 30,
                }],
                "capacity": 1000,
                "expiry": 120,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Distributed mode: Celery workers host the engines (see serving/worker/). Which models a worker
# hosts: a comma-separated list or "all" enabled ones; `--models` on the command line wins.
WORKER_MODELS = env("WORKER_MODELS")
# Workers refresh a liveness key this often; one silent for WORKER_DEAD_AFTER_SECONDS is dead.
WORKER_HEARTBEAT_SECONDS = env("WORKER_HEARTBEAT_SECONDS")
WORKER_DEAD_AFTER_SECONDS = env("WORKER_DEAD_AFTER_SECONDS")
# How long a job may wait in its queue for a worker before the client gets a 503.
QUEUE_TIMEOUT_SECONDS = env("QUEUE_TIMEOUT_SECONDS")

# Each web and worker process samples CPU, memory, disk and GPU this often (0 turns it off;
# status pages then sample on demand). See monitoring/sampler.py.
SYSTEM_SAMPLE_SECONDS = env("SYSTEM_SAMPLE_SECONDS")
# Who may read GET /metrics: "open", "staff" (an admin session) or "token" (Bearer METRICS_TOKEN).
# Open by default only while DEBUG, so a local Prometheus scrapes the embedded mode as is.
METRICS_ACCESS = env("METRICS_ACCESS") or ("open" if DEBUG else "token")
if METRICS_ACCESS not in ("open", "staff", "token"):
    raise ImproperlyConfigured(f"METRICS_ACCESS={METRICS_ACCESS!r}; choose one of open, staff, token")
METRICS_TOKEN = env("METRICS_TOKEN")  # no default: with "token" and none set, /metrics answers 403
# Celery beat prunes request records older than this daily (0 keeps them forever), this many rows
# per transaction; `manage.py prune_request_records` does the same on demand.
RECORD_RETENTION_DAYS = env("RECORD_RETENTION_DAYS")
RECORD_RETENTION_BATCH_SIZE = env("RECORD_RETENTION_BATCH_SIZE")
if RECORD_RETENTION_DAYS < 0 or RECORD_RETENTION_BATCH_SIZE < 1:
    raise ImproperlyConfigured("RECORD_RETENTION_DAYS must be >= 0 and RECORD_RETENTION_BATCH_SIZE >= 1")

# Largest request body (HTTP, chunked or not) and WebSocket message accepted; larger ones get
# a 413 `request_too_large` (see api/request_body.py). Django's own check uses the same bound.
MAX_REQUEST_BODY_BYTES = env("MAX_REQUEST_BODY_BYTES")
if MAX_REQUEST_BODY_BYTES < 1:
    raise ImproperlyConfigured("MAX_REQUEST_BODY_BYTES must be >= 1")
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BODY_BYTES

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

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# collectstatic writes here (the Docker image does it at build time); WhiteNoise serves it.
STATIC_ROOT = BASE_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)  # WhiteNoise warns on every start when it is missing
# Django's two finders, answering "not found" rather than 500 for `/static/../x` (see the module).
STATICFILES_FINDERS = ["inference_platform.staticfiles.SafeFileSystemFinder",
                       "inference_platform.staticfiles.SafeAppDirectoriesFinder"]
# WhiteNoise also finds files in the apps (admin, Swagger UI), as collectstatic would, once at start:
# every entry point (./run.sh, daphne, DEBUG on or off) serves them without a collect step.
WHITENOISE_USE_FINDERS = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["api.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # JSON with bounded nesting and no lone surrogates (api/json_body.py), as WebSockets parse it.
    "DEFAULT_PARSER_CLASSES": ["api.json_body.JsonBodyParser"],
    "EXCEPTION_HANDLER": "api.errors.openai_exception_handler",
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

# The OpenAPI document at /v1/openapi.json and the Swagger UI at /v1/docs (see api/openai/schema.py).
SPECTACULAR_SETTINGS = {
    "TITLE": "Inference platform API",
    "VERSION": "1.0.0",
    "DESCRIPTION": (
        "An OpenAI-compatible API for the models this platform serves. Every `/v1` endpoint takes "
        "`Authorization: Bearer <key>` (keys are issued in the admin); `GET /health` needs none. "
        "Errors come in OpenAI's shape, `{\"error\": {\"message\", \"type\", \"param\", \"code\"}}`; "
        "a method a path does not allow answers 405 in that shape.\n\n"
        "With `\"stream\": true` the completion endpoints answer `text/event-stream`: one "
        "`data: <chunk JSON>` event per chunk, ending with `data: [DONE]`; an error after the stream "
        "has started arrives as a `data: {\"error\": ...}` event.\n\n"
        "**WebSocket streaming** (which OpenAPI cannot describe): `ws://HOST:PORT/ws/v1/chat/completions` "
        "and `ws://HOST:PORT/ws/v1/completions` take `{\"type\": \"request\", \"body\": {...}}` "
        "(the body you would POST here), always stream, and end every request with a `[DONE]` text "
        "frame; authenticate with the `Authorization` header on the handshake or a first "
        "`{\"type\": \"auth\", \"api_key\": \"<key>\"}` message. See the README for the full protocol."
    ),
    # 3.1: event-stream responses describe each event's JSON payload (contentSchema).
    "OAS_VERSION": "3.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and docs are public: a stale key in the browser must not lock them.
    "SERVE_AUTHENTICATION": [],
    # Bearer scheme: api/openai/schema.py describes ApiKeyAuthentication as HTTP bearer ("ApiKeyAuth").
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # /metrics is a plain Django view: monitoring/schema.py describes it.
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                             "monitoring.schema.add_metrics_operation"],
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "filters": {"server_errors_only": {"()": "api.access_log.ServerErrorsOnly"},
                "without_traceback": {"()": "api.access_log.WithoutTraceback"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL")},
    # One line per request, with query values and keys redacted: api/access_log.py, from `serve`.
    # Nothing logs request bodies or headers; prompts only with LOG_PROMPTS.
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # Django's own console handler would print every django.* record a second time while DEBUG.
        "django": {"handlers": [], "level": "NOTSET"},
        # "Unauthorized: /v1/models" repeats the access log's line; its 5xx records carry the traceback.
        "django.request": {"filters": ["server_errors_only"]},
        # Suspicious requests (a bad Host header, an oversized form) are the client's doing: one line each.
        **{f"django.security.{name}": {"filters": ["without_traceback"]} for name in (
            "DisallowedHost", "RequestDataTooBig", "TooManyFieldsSent", "TooManyFilesSent", "SuspiciousFileOperation")},
    },
}
