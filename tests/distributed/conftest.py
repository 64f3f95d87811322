"""A module-scoped real cluster: private Redis, fresh PostgreSQL database, workers, daphne."""

import pytest

from .cluster import Cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, gguf_path):
    cluster = Cluster(tmp=tmp_path_factory.mktemp("cluster"))
    cluster.start_redis()
    cluster.create_database()
    try:
        cluster.manage("register_model", "smollm2", "--source", gguf_path, "--engine", "llama_cpp")
        cluster.manage(
            "register_model", "echo", "--engine", "echo", "--context-length", "4096", "--option", "token_delay_ms=20"
        )
        cluster.manage(
            "register_model",
            "slow-echo",
            "--engine",
            "echo",
            "--context-length",
            "4096",
            "--option",
            "token_delay_ms=60",
        )
        cluster.manage("register_model", "orphan", "--engine", "echo")
        cluster.api_key = cluster.manage("issue_api_key", "cluster").strip()
        yield cluster
    finally:
        cluster.shutdown()
        cluster.drop_database()
