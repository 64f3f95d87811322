"""Settings are read at start-up, so each case starts manage.py as a fresh process."""

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from engines.platform import FORCEABLE_ENGINES

REPO = Path(__file__).resolve().parents[2]
OUR_VARS = (
    "INFERENCE_ENGINE",
    "DEBUG",
    "SECRET_KEY",
    "DATABASE_URL",
    "REDIS_URL",
    "DJANGO_SETTINGS_MODULE",
    "METRICS_ACCESS",
    "ALLOWED_HOSTS",
    "SECURE_PROXY_SSL_HEADER",
    "CSRF_TRUSTED_ORIGINS",
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
)


@pytest.fixture
def manage(tmp_path):
    def run(*args: str, **env: str) -> subprocess.CompletedProcess:
        environ = {k: v for k, v in os.environ.items() if k not in OUR_VARS}
        environ["DATABASE_URL"] = f"sqlite:///{tmp_path / 'check.sqlite3'}"
        environ.update(env)
        return subprocess.run(
            [sys.executable, "manage.py", *args], cwd=REPO, env=environ, capture_output=True, text=True, timeout=120
        )

    return run


def test_invalid_engine_fails_at_start_up_with_the_choices(manage):
    result = manage("check", INFERENCE_ENGINE="bogus")
    assert result.returncode != 0
    assert "INFERENCE_ENGINE='bogus'" in result.stderr
    assert all(choice in result.stderr for choice in FORCEABLE_ENGINES)


def test_valid_engine_passes_check(manage):
    result = manage("check", INFERENCE_ENGINE="echo")
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_distributed_production_without_secret_key_fails_with_one_line(manage):
    result = manage("check", DEBUG="false", REDIS_URL="redis://127.0.0.1:6379/0")
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "SECRET_KEY is not set" in result.stderr
    ok = manage("check", DEBUG="false", REDIS_URL="redis://127.0.0.1:6379/0", SECRET_KEY="x" * 50)
    assert ok.returncode == 0, ok.stderr


def test_a_wrong_setting_is_one_line_not_a_traceback(manage):
    result = manage("check", METRICS_ACCESS="public")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "manage.py: METRICS_ACCESS='public'; choose one of open, staff, token"
    ]


@pytest.mark.parametrize("name", ["PORT", "RESPONSE_RETENTION_DAYS", "MAX_REQUEST_BODY_BYTES"])
def test_a_number_setting_that_is_no_number_is_one_line_naming_it(manage, name):
    result = manage("check", **{name: "ten"})
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"manage.py: {name}='ten' is not valid: invalid literal for int() with base 10: 'ten'"
    ], result.stderr


@pytest.mark.parametrize(
    "program",
    [
        ["celery", "-A", "inference_platform", "worker"],
        ["daphne", "-p", "0", "inference_platform.asgi:application"],
    ],
    ids=["celery", "daphne"],
)
def test_a_wrong_setting_is_one_line_for_celery_and_daphne_too(tmp_path, program):
    """Web and worker processes started directly (compose, the README's recipe) say it in one line."""
    environ = {k: v for k, v in os.environ.items() if k not in OUR_VARS}
    environ.update(DATABASE_URL=f"sqlite:///{tmp_path / 'check.sqlite3'}", METRICS_ACCESS="public")
    executable = str(Path(sys.executable).parent / program[0])
    result = subprocess.run(
        [executable, *program[1:]], cwd=REPO, env=environ, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"{program[0]}: METRICS_ACCESS='public'; choose one of open, staff, token"
    ], result.stderr


def _secret_key(manage, **env) -> str:
    result = manage("shell", "-c", "from django.conf import settings; print(settings.SECRET_KEY)", **env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]  # after shell's "N objects imported" note


def test_the_embedded_default_keeps_its_generated_key_in_var(manage):
    """DEBUG on or off, without SECRET_KEY one host's processes share the key in var/secret_key."""
    key_file = REPO / "var" / "secret_key"
    key = _secret_key(manage, DEBUG="false")
    assert key == key_file.read_text().strip() and len(key) >= 50
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert _secret_key(manage) == key  # reused, not made again
    assert _secret_key(manage, DEBUG="false", SECRET_KEY="from-the-environment-" * 3) == "from-the-environment-" * 3


# What the README's "Security" section tells a production deployment behind a TLS proxy to set.
PRODUCTION_ENV = {
    "DEBUG": "false",
    "SECRET_KEY": "a-long-random-production-secret-key-made-for-this-test-0123456789",
    "ALLOWED_HOSTS": "llm.example.com",
    "SECURE_PROXY_SSL_HEADER": "true",
    "CSRF_TRUSTED_ORIGINS": "https://llm.example.com",
    "SECURE_SSL_REDIRECT": "true",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "SECURE_HSTS_PRELOAD": "true",
    "SESSION_COOKIE_SECURE": "true",
    "CSRF_COOKIE_SECURE": "true",
}


def test_deploy_check_is_clean_with_the_documented_production_environment(manage):
    result = manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION_ENV)
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout
    distributed = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        REDIS_URL="redis://127.0.0.1:6379/0",
        METRICS_TOKEN="a-metrics-token",
        **PRODUCTION_ENV,
    )
    assert distributed.returncode == 0, distributed.stderr


def test_deploy_check_still_warns_without_it(manage):
    result = manage("check", "--deploy", "--fail-level", "WARNING", DEBUG="false")
    assert result.returncode != 0
    for warning in ("W004", "W008", "W012", "W016"):
        assert f"security.{warning}" in result.stderr


def test_database_url_is_honoured(manage, tmp_path):
    db = tmp_path / "elsewhere.sqlite3"
    result = manage("migrate", "--noinput", DATABASE_URL=f"sqlite:///{db}")
    assert result.returncode == 0, result.stderr
    tables = {row[0] for row in sqlite3.connect(db).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "models_registry_apikey" in tables
