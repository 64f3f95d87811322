"""Three worker hosts, each in its own network namespace (benchmarks/hosts), echo engine only.

Replicas spread by placement, a killed host's clients get an error and its copies are placed on
the hosts left, adding a host is one command, and the harness leaves nothing behind. Needs root
and `ip netns`; skipped with the reason otherwise.
"""

from __future__ import annotations

import concurrent.futures
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest

from benchmarks.hosts.cleanup import leftovers
from benchmarks.hosts.harness import Harness
from benchmarks.hosts.network import why_unavailable

REPO = Path(__file__).resolve().parents[2]


pytestmark = [
    pytest.mark.distributed,
    pytest.mark.live,
    pytest.mark.postgres,
    pytest.mark.skipif(bool(why_unavailable()), reason=why_unavailable() or "-"),
]

# Fast liveness and reconciliation, so that a dead host is noticed within a few seconds.
SETTINGS = {"WORKER_HEARTBEAT_SECONDS": "0.5", "WORKER_DEAD_AFTER_SECONDS": "3", "RECONCILE_SECONDS": "1"}
ECHO = ("--engine", "echo", "--context-length", "4096", "--option", "token_delay_ms=20")
WAIT_S = 90  # how long a state may take to come about before the test fails (not a speed check)
LONG_ANSWER = " ".join(["word"] * 300)  # 300 tokens at 20 ms: running when its host is killed


def wait_for(predicate, what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def cli(*args: str, run_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    where = ["--run-dir", str(run_dir)] if run_dir else []
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.hosts", *where, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    with Harness.create(tmp_path_factory.mktemp("hosts"), settings=SETTINGS) as harness:
        harness.manage("register_model", "spread", *ECHO, "--replicas", "3")
        harness.manage("register_model", "gpu-only", *ECHO, "--replicas", "3", "--placement-label", "gpu")
        harness.start_web()
        for name in ("h1", "h2", "h3"):
            harness.add_host(name, labels=["gpu"] if name == "h3" else None, wait=False)
        wait_for(lambda: all(harness.worker_state(name) == "ready" for name in ("h1", "h2", "h3")), "3 hosts ready")
        yield harness


def stream(harness: Harness, model: str) -> str:
    """One streamed answer through the openai SDK: "ok", or the error the client got."""
    client = openai.OpenAI(base_url=f"{harness.base_url}/v1", api_key=harness.api_key, max_retries=0, timeout=60)
    try:
        chunks = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": LONG_ANSWER}], max_tokens=300, stream=True
        )
        for _ in chunks:
            pass
    except openai.APIError as exc:
        return f"error: {exc}"
    finally:
        client.close()
    return "ok"


def test_replicas_spread_one_per_host_and_a_label_only_on_its_hosts(harness):
    wait_for(lambda: harness.ready_hosts("spread") == ["h1", "h2", "h3"], "spread on every host")
    wait_for(lambda: harness.ready_hosts("gpu-only") == ["h3"], "gpu-only on the labelled host")
    workers = {w["host"]: w for w in harness.workers()}
    assert sorted(workers) == ["h1", "h2", "h3"]  # each namespace has its own host name
    assert workers["h3"]["labels"] == ["gpu"] and workers["h1"]["labels"] == []
    assert stream(harness, "spread") == "ok"


def test_a_killed_hosts_clients_get_an_error_and_its_copies_move(harness):
    harness.manage("register_model", "pair", *ECHO, "--replicas", "2")
    wait_for(lambda: len(harness.ready_hosts("pair")) == 2, "pair on two hosts")
    holders = harness.ready_hosts("pair")
    spare = ({"h1", "h2", "h3"} - set(holders)).pop()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        streams = [pool.submit(stream, harness, "pair") for _ in range(4)]
        # The host to kill is one that is running some of the streams now.
        busy: list[str] = []

        def some_holder_busy() -> bool:
            rows = harness.query(
                "SELECT host FROM models_registry_workerregistration WHERE in_flight > 0 AND host = ANY(%s)", holders
            )
            busy[:] = [row[0] for row in rows]
            return bool(busy)

        wait_for(some_holder_busy, "a holder running the streams")
        victim = busy[0]
        harness.kill_host(victim)
        outcomes = [future.result() for future in streams]

    failed = [outcome for outcome in outcomes if outcome != "ok"]
    assert failed, outcomes
    assert all("stopped while running this request" in outcome for outcome in failed), failed
    survivors = sorted({*holders, spare} - {victim})
    wait_for(lambda: harness.ready_hosts("pair") == survivors, f"pair rescheduled on {survivors}")
    assert spare in harness.ready_hosts("pair")
    assert harness.worker_state(victim) == "dead"
    assert harness.host_pids(victim) == []
    assert stream(harness, "pair") == "ok"


def test_adding_a_host_is_one_command(harness):
    done = cli("add-host", "h4", "--labels", "gpu", run_dir=harness.run_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert harness.worker_state("h4") == "ready"
    # "spread" wants 3 copies and lost one with the killed host: the new host takes it.
    wait_for(lambda: "h4" in harness.ready_hosts("spread"), "spread on the new host")
    assert len(harness.ready_hosts("spread")) == 3
    wait_for(lambda: "h4" in harness.ready_hosts("gpu-only"), "gpu-only on the new labelled host")


def test_the_harness_leaves_nothing_behind(harness):
    run_id = harness.run_id
    assert any(leftovers(run_id).values())
    harness.destroy()
    assert leftovers(run_id) == {"namespaces": [], "links": [], "processes": [], "databases": []}


def test_cleanup_removes_what_a_crashed_run_left(tmp_path):
    run_dir = tmp_path / "crashed"
    up = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.hosts", "--run-dir", str(run_dir), "up", "--hosts", "1"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert up.stdout is not None
        for line in up.stdout:  # "host h1 ready" once its worker is
            if line.startswith("host h1 ready"):
                break
        else:
            raise AssertionError(f"`up` ended before its host was ready: exit {up.wait()}")
        run_id = json.loads((run_dir / "state.json").read_text())["run_id"]
        up.send_signal(signal.SIGKILL)  # a crash: no chance to clean up
        up.wait()
        left = leftovers(run_id)
        assert left["namespaces"] and left["links"] and left["databases"]
        done = cli("cleanup", "--run", run_id)
        assert done.returncode == 0, done.stdout + done.stderr
        assert leftovers(run_id) == {"namespaces": [], "links": [], "processes": [], "databases": []}
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
