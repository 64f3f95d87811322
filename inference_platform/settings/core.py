"""Django itself: debug, hosts, secrets and HTTPS, apps, middleware, the database, static files, logging."""

import functools

from django.core.exceptions import ImproperlyConfigured
from django.utils.functional import lazy

from inference_platform.secret_key import secret_key_from_file

from .distributed import DISTRIBUTED
from .environment import BASE_DIR, env

# Django's debug pages show settings and URL patterns to anyone: never on a server that is exposed.
DEBUG = env("DEBUG")

HOST = env("HOST")
PORT = env("PORT")
ALLOWED_HOSTS = env("ALLOWED_HOSTS")

# First-run superuser made by `setup_embedded`; a random password is printed if unset.
ADMIN_USERNAME = env("ADMIN_USERNAME")
ADMIN_PASSWORD = env("ADMIN_PASSWORD")

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
    # Read, or made, on first use rather than here: importing the settings creates nothing.
    SECRET_KEY = lazy(functools.cache(secret_key_from_file), str)(BASE_DIR / "var" / "secret_key")

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
    # Served through ASGI these run their hooks on the event loop: see inference_platform.middleware.
    "django.middleware.security.SecurityMiddleware",
    # Serves the admin's static files when DEBUG is off (the ASGI servers serve none themselves).
    "inference_platform.staticfiles.AsyncWhiteNoiseMiddleware",
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

VAR_DIR = BASE_DIR / "var"  # the embedded SQLite file; inference_platform.startup makes it
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
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
    # Tests get a file too: an in-memory database fails concurrent writes at once ("table is
    # locked") instead of waiting, which would drop records of requests finishing together.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Each process borrows from its own pool of at most DATABASE_POOL_SIZE connections. A request
    # holds one only for its key lookup and its record, so a burst of arrivals queues for the pool
    # (up to 30 s) instead of opening one connection each and passing PostgreSQL's max_connections.
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": env("DATABASE_POOL_SIZE"),
        "timeout": 30,
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# collectstatic writes here (the Docker image does it at build time); WhiteNoise serves it.
STATIC_ROOT = BASE_DIR / "staticfiles"  # inference_platform.startup makes it: WhiteNoise warns when it is missing
# Django's two finders, answering "not found" rather than 500 for `/static/../x` (see the module).
STATICFILES_FINDERS = [
    "inference_platform.staticfiles.SafeFileSystemFinder",
    "inference_platform.staticfiles.SafeAppDirectoriesFinder",
]
# WhiteNoise also finds files in the apps (admin, Swagger UI), as collectstatic would, once at start:
# every entry point (./run.sh, daphne, DEBUG on or off) serves them without a collect step.
WHITENOISE_USE_FINDERS = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "filters": {
        "server_errors_only": {"()": "api.access_log.ServerErrorsOnly"},
        "without_traceback": {"()": "api.access_log.WithoutTraceback"},
    },
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
        **{
            f"django.security.{name}": {"filters": ["without_traceback"]}
            for name in (
                "DisallowedHost",
                "RequestDataTooBig",
                "TooManyFieldsSent",
                "TooManyFilesSent",
                "SuspiciousFileOperation",
            )
        },
    },
}
