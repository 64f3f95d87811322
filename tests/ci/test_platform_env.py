"""What the platform processes that tests start get from the test process's environment: the machine's
basics and the test's own settings, never an exported setting of the platform's."""

import pytest

from tests.compat.live_server import platform_env
from tests.distributed.cluster import Cluster

EXPORTED = {
    "INFERENCE_ENGINE": "echo",
    "REDIS_URL": "redis://nowhere.invalid:6379/0",
    "DEBUG": "true",
    "LOG_PROMPTS": "true",
    "METRICS_ACCESS": "open",
    "DATABASE_URL": "sqlite:////nowhere.sqlite3",
    "DJANGO_SETTINGS_MODULE": "no.such.settings",
    "PYTHONUNBUFFERED": "",
}


@pytest.fixture
def exported(monkeypatch):
    for name, value in EXPORTED.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PIP_FIND_LINKS", "/somewhere/wheels")


def test_the_live_server_gets_no_exported_setting(exported):
    env = platform_env(PORT="8123")
    assert not (set(EXPORTED) - {"PYTHONUNBUFFERED"}) & set(env)
    assert env["PYTHONUNBUFFERED"] == "1" and env["PORT"] == "8123"
    assert env["PIP_FIND_LINKS"] == "/somewhere/wheels", "run.sh's install step keeps pip's settings"
    assert env["PATH"] and env["LANG"]


def test_cluster_processes_get_the_cluster_settings_only(exported, tmp_path):
    cluster = Cluster(tmp=tmp_path)
    env = cluster.env(WORKER_MODELS="echo")
    assert (env["DATABASE_URL"], env["REDIS_URL"]) == (cluster.database_url, cluster.redis_url)
    assert env["WORKER_MODELS"] == "echo" and env["PYTHONUNBUFFERED"] == "1"
    assert not {"INFERENCE_ENGINE", "LOG_PROMPTS", "DJANGO_SETTINGS_MODULE"} & set(env)
    # The cluster sets these itself, as production would, whatever the test process exported.
    assert (env["DEBUG"], env["METRICS_ACCESS"], env["SECRET_KEY"]) == ("false", "open", cluster.secret_key)
