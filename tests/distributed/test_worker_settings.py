"""Settings that shape a deployment, on a real one: WORKER_MODELS (and `--models` over it),
QUEUE_TIMEOUT_SECONDS, and /metrics while Redis is down or hung."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import httpx
import pytest

from .cluster import BIN, REPO, Cluster, Proc, _wait, scrape

pytestmark = [pytest.mark.distributed, pytest.mark.live]

QUEUE_TIMEOUT_SECONDS = 3
BLOCKER = " ".join(f"w{i}" for i in range(300))  # 300 tokens at 250 ms: far longer than the test needs


class SettingsCluster(Cluster):
    """A cluster whose processes all get `extra_env` on top of the usual environment."""

    extra_env: dict = {}

    def env(self, **extra) -> dict:
        return super().env(**{**self.extra_env, **extra})


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    cluster = SettingsCluster(tmp=tmp_path_factory.mktemp("settings-cluster"))
    cluster.extra_env = {
        "QUEUE_TIMEOUT_SECONDS": str(QUEUE_TIMEOUT_SECONDS),
        "METRICS_ACCESS": "open",
        "REDIS_TIMEOUT_SECONDS": "1",
    }
    cluster.start_redis()
    cluster.create_database()
    try:
        for name in ("alpha", "beta"):
            cluster.manage("register_model", name, "--engine", "echo")
        cluster.manage(
            "register_model", "slow", "--engine", "echo", "--context-length", "4096", "--option", "token_delay_ms=250"
        )
        cluster.api_key = cluster.manage("issue_api_key", "settings").strip()
        cluster.base_url = cluster.start_web()
        yield cluster
    finally:
        cluster.shutdown()
        cluster.drop_database()


def start_worker(cluster: Cluster, name: str, *args: str, wait: bool = True, **env: str) -> Proc:
    """A worker started like the README's, but with only the arguments given (no --models unless in args)."""
    log = cluster.tmp / f"worker-{name}.log"
    process = subprocess.Popen(
        [
            str(BIN / "celery"),
            "-A",
            "inference_platform",
            "worker",
            *args,
            "--concurrency",
            "1",
            "-n",
            f"{name}@%h",
            "--without-mingle",
            "--without-gossip",
            "-l",
            "info",
        ],
        cwd=REPO,
        env=cluster.env(**env),
        stdout=open(log, "ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    proc = Proc(name, process, log)
    cluster.procs.append(proc)
    if wait:
        _wait(lambda: cluster.worker_state(process.pid) == "ready", 90, f"worker {name}", process, log)
    return proc


def hosted_models(cluster: Cluster, proc: Proc) -> list[str]:
    (row,) = cluster.query(
        "SELECT hosted_models FROM models_registry_workerregistration WHERE pid = %s", proc.process.pid
    )
    return row[0]


def chat(cluster: Cluster, model: str, content: str = "one two three", **fields) -> httpx.Response:
    return httpx.post(
        f"{cluster.base_url}/v1/chat/completions",
        timeout=60,
        headers={"Authorization": f"Bearer {cluster.api_key}"},
        json={"model": model, "messages": [{"role": "user", "content": content}], **fields},
    )


def sse_payloads(response: httpx.Response):
    for line in response.iter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            yield json.loads(line[6:])


def content_of(event: dict) -> str:
    return (event["choices"] or [{}])[0].get("delta", {}).get("content") or ""


def served_by(cluster: Cluster, response: httpx.Response) -> str:
    request_id = response.json()["id"].removeprefix("chatcmpl-")
    (row,) = cluster.query("SELECT worker FROM monitoring_requestrecord WHERE request_id = %s", request_id)
    return row[0]


def test_worker_models_env_picks_what_a_worker_hosts(deployment):
    worker = start_worker(deployment, "only-alpha", WORKER_MODELS="alpha")
    assert hosted_models(deployment, worker) == ["alpha"]
    queues = deployment.consumed_queues(worker)
    assert "model.alpha" in queues and not {"model.beta", "model.slow"} & queues, queues

    answer = chat(deployment, "alpha")
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"] == "one two three"
    assert served_by(deployment, answer) == deployment.worker_id(worker.process.pid)
    refused = chat(deployment, "beta")
    assert refused.status_code == 503, refused.text
    assert refused.headers["Retry-After"]
    assert "Model `beta` cannot be loaded now: no live worker takes new models" in refused.json()["error"]["message"]


def test_worker_models_naming_no_enabled_model_stops_the_worker(deployment):
    worker = start_worker(deployment, "ghostly", wait=False, WORKER_MODELS="alpha,ghost")
    assert worker.process.wait(timeout=90) != 0
    assert "no enabled model named ghost" in worker.log.read_text()
    assert deployment.worker_state(worker.process.pid) is None  # never registered


def test_models_option_wins_over_worker_models(deployment):
    worker = start_worker(deployment, "beta-by-option", "--models", "beta", WORKER_MODELS="alpha")
    assert hosted_models(deployment, worker) == ["beta"]
    queues = deployment.consumed_queues(worker)
    assert "model.beta" in queues and "model.alpha" not in queues, queues
    answer = chat(deployment, "beta")
    assert answer.status_code == 200
    assert served_by(deployment, answer) == deployment.worker_id(worker.process.pid)


def test_a_job_left_waiting_past_queue_timeout_is_a_503(deployment):
    start_worker(deployment, "slow-one", "--models", "slow")  # one slot
    headers = {"Authorization": f"Bearer {deployment.api_key}"}
    blocker = {"model": "slow", "stream": True, "messages": [{"role": "user", "content": BLOCKER}]}
    with httpx.stream(
        "POST", f"{deployment.base_url}/v1/chat/completions", json=blocker, headers=headers, timeout=60
    ) as stream:
        assert stream.status_code == 200
        events = sse_payloads(stream)
        # The blocker holds the worker's only slot once its first token has arrived.
        while not content_of(next(events)):
            pass
        waiting = chat(deployment, "slow", "a b c")
        # The blocker is still streaming: the 503 came while the slot was busy, not after it freed.
        after = next(events)
        assert content_of(after) and after["choices"][0]["finish_reason"] is None
    assert waiting.status_code == 503, waiting.text
    assert waiting.json() == {
        "error": {
            "message": f"No worker took the request within {QUEUE_TIMEOUT_SECONDS}s.",
            "type": "server_error",
            "param": None,
            "code": "service_unavailable",
        }
    }

    # The worker is free again, skips the timed-out job and serves the next one.
    assert chat(deployment, "slow", "d e f").json()["choices"][0]["message"]["content"] == "d e f"
    rows = deployment.query(
        "SELECT status_code, error_type, worker, completion_tokens FROM monitoring_requestrecord "
        "WHERE model_name = 'slow' ORDER BY created_at"
    )
    deadline = time.monotonic() + 30
    while len(rows) < 3 and time.monotonic() < deadline:  # the cancelled blocker's record comes from the worker
        time.sleep(0.2)
        rows = deployment.query(
            "SELECT status_code, error_type, worker, completion_tokens "
            "FROM monitoring_requestrecord WHERE model_name = 'slow' ORDER BY created_at"
        )
    statuses = [row[0] for row in rows]
    assert sorted(statuses) == [200, 499, 503], rows
    (timed_out,) = [row for row in rows if row[0] == 503]
    # Written by the web process; the worker never ran it, so no worker and no tokens.
    assert timed_out[1:] == ("service_unavailable", "", None)


def test_metrics_answer_from_the_database_while_redis_is_hung_or_down(deployment):
    before = scrape(deployment.base_url)
    assert before["vllm:num_requests_running"] and before["vllm:num_requests_waiting"]
    served = before["vllm:request_success_total"][(("finished_reason", "stop"), ("model_name", "alpha"))]
    assert served >= 1

    deployment.redis.process.send_signal(signal.SIGSTOP)  # hung: connections open, nothing answers
    try:
        hung = scrape(deployment.base_url)
    finally:
        deployment.redis.process.send_signal(signal.SIGCONT)
    deployment.stop_redis()  # gone: connections refused
    down = scrape(deployment.base_url)
    for samples in (hung, down):
        assert "vllm:num_requests_running" not in samples and "vllm:num_requests_waiting" not in samples
        assert samples["vllm:request_success_total"] == before["vllm:request_success_total"]
        assert samples["vllm:prompt_tokens_total"] == before["vllm:prompt_tokens_total"]
    deployment.start_redis()
    _wait(lambda: "vllm:num_requests_running" in scrape(deployment.base_url), 30, "gauges back after Redis returns")
