"""Settings are read at start-up, so each case starts manage.py as a fresh process."""

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from engines.platform import FORCEABLE_ENGINES

REPO = Path(__file__).resolve().parents[2]
OUR_VARS = ("INFERENCE_ENGINE", "DEBUG", "SECRET_KEY", "DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")


@pytest.fixture
def manage(tmp_path):
    def run(*args: str, **env: str) -> subprocess.CompletedProcess:
        environ = {k: v for k, v in os.environ.items() if k not in OUR_VARS}
        environ["DATABASE_URL"] = f"sqlite:///{tmp_path / 'check.sqlite3'}"
        environ.update(env)
        return subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=environ,
                              capture_output=True, text=True, timeout=120)
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


def test_production_requires_secret_key(manage):
    result = manage("check", DEBUG="false")
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr
    ok = manage("check", DEBUG="false", SECRET_KEY="x" * 50)
    assert ok.returncode == 0, ok.stderr


def test_database_url_is_honoured(manage, tmp_path):
    db = tmp_path / "elsewhere.sqlite3"
    result = manage("migrate", "--noinput", DATABASE_URL=f"sqlite:///{db}")
    assert result.returncode == 0, result.stderr
    tables = {row[0] for row in sqlite3.connect(db).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "models_registry_apikey" in tables
