"""Settings, read from the environment through one `env` object (django-environ).

No environment at all gives the embedded default: SQLite, in-process engine host, DEBUG on.
Setting REDIS_URL switches to distributed mode.
"""

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from engines.platform import ENGINE_CHOICES

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
)
environ.Env.read_env(BASE_DIR / ".env")

DEBUG = env("DEBUG")
if DEBUG:
    SECRET_KEY = env("SECRET_KEY", default="django-insecure-embedded-default-only-for-debug")
else:
    SECRET_KEY = env("SECRET_KEY")  # no default: production must set it

HOST = env("HOST")
PORT = env("PORT")
ALLOWED_HOSTS = env("ALLOWED_HOSTS")

INFERENCE_ENGINE = env("INFERENCE_ENGINE")
if INFERENCE_ENGINE not in ENGINE_CHOICES:
    raise ImproperlyConfigured(
        f"INFERENCE_ENGINE={INFERENCE_ENGINE!r} is not an engine; choose one of {', '.join(ENGINE_CHOICES)}"
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
DISTRIBUTED = bool(REDIS_URL)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "channels",
    "models_registry",
    "api",
    "monitoring",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
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

VAR_DIR = BASE_DIR / "var"  # the embedded SQLite file and collected static files
VAR_DIR.mkdir(exist_ok=True)
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Concurrent readers while one request writes its record: WAL plus a busy timeout.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "init_command": "PRAGMA journal_mode=WAL;"}
    )

if DISTRIBUTED:
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_TASK_ALWAYS_EAGER = not DISTRIBUTED

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["api.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "api.exceptions.openai_exception_handler",
    "UNAUTHENTICATED_USER": None,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
