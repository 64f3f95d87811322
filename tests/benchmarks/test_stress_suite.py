"""tests/stress end to end, for seconds instead of minutes: run_stress_test.sh drives locust against the
platform (and against llama-server, whose missing /v1/system/status the scenario skips), samples the CPU,
and analyze_results.py turns each run into charts and the seed's targets."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from benchmarks.llama_server import running_llama_server
from models_registry.bundled import bundled_model_path
from tests.compat.browser import PNG_MAGIC

pytestmark = [pytest.mark.live, pytest.mark.model, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "stress" / "run_stress_test.sh"
CHARTS = ("response_times.png", "throughput.png", "failures.png", "cpu.png")
TARGETS = {"success rate > 95%", "average response < 3 s", "throughput > 50 req/min", "mean CPU < 80%"}


def run_suite(host: str, out: Path, *, api_key: str, target: str, server_pid: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "STRESS_API_KEY": api_key}
    return subprocess.run(
        [
            str(SCRIPT),
            "--host",
            host,
            "--out",
            str(out),
            "--runs",
            "3:8,2:5",
            "--target",
            target,
            "--server-pid",
            str(server_pid),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def check_results(out: Path, result: subprocess.CompletedProcess, *, names: set[str]) -> list[dict]:
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    runs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert runs == ["002users-5s", "003users-8s"]
    for run in runs:
        folder = out / run
        assert (folder / "report.html").read_text().lstrip().lower().startswith("<!doctype html")
        assert json.loads((folder / "locust.json").read_text())  # the totals, counted after the last calls
        with open(folder / "cpu.csv", newline="") as f:
            samples = list(csv.DictReader(f))
        assert samples and all(0 <= float(row["cpu_percent"]) <= 100 for row in samples)
        # The server's processes were sampled too, and served the requests: some CPU time is theirs.
        assert all(0 <= float(row["server_cpu_percent"]) <= 100 for row in samples)
        assert sum(float(row["server_cpu_percent"]) for row in samples) > 0
    for chart in CHARTS:
        assert (out / chart).read_bytes().startswith(PNG_MAGIC), chart
    summary = json.loads((out / "summary.json").read_text())
    assert [run["name"] for run in summary] == runs
    for run in summary:
        assert run["requests"] > 0 and run["failures"] == 0, run
        assert set(run["by_name"]) <= names, run["by_name"]
        assert {t["target"] for t in run["targets"]} == TARGETS
        assert all(t["met"] is not None for t in run["targets"]), run["targets"]
        assert run["cpu_of"] == "server"
    # Users pick tasks at random; over both runs the inference users answer at least one chat.
    assert sum(run["by_name"].get("chat completion", {}).get("requests", 0) for run in summary) > 0
    assert "success rate > 95%" in result.stdout and "summary.md" in result.stdout
    return summary


def test_the_stress_suite_against_the_platform(tmp_path, live):
    out = tmp_path / "stress"
    result = run_suite(live.base_url, out, api_key=live.api_key, target="platform", server_pid=live.process.pid)
    check_results(
        out, result, names={"chat completion", "models", "health", "system status", "rapid health", "rapid models"}
    )
    assert "| 003users-8s |" in (out / "summary.md").read_text()


def test_the_stress_suite_against_llama_server(tmp_path, llama_server_binary):
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_llama_server(
            llama_server_binary,
            bundled_model_path(),
            alias="smollm2",
            parallel=4,
            threads=2,
            ctx_per_slot=2048,
            tmp=Path(tmp),
        ) as server,
    ):
        out = tmp_path / "stress"
        result = run_suite(server.base_url, out, api_key="", target="llama-server", server_pid=server.pid)
    # llama-server has no /v1/system/status: the scenario leaves it out rather than counting 404s.
    check_results(out, result, names={"chat completion", "models", "health", "rapid health", "rapid models"})
