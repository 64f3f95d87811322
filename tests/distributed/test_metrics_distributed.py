"""Monitoring in distributed mode: /metrics and the hosts in /v1/system/status cover every process."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from .cluster import scrape

pytestmark = [pytest.mark.distributed, pytest.mark.live]


@pytest.fixture(scope="module")
def deployment(cluster):
    """Two workers hosting echo, a third hosting slow-echo one job at a time, two web processes."""
    cluster.workers = [
        cluster.start_worker("e1", "echo", concurrency=2),
        cluster.start_worker("e2", "echo", concurrency=2),
        cluster.start_worker("s1", "slow-echo", concurrency=1),
    ]
    cluster.web_urls = [cluster.start_web("web1"), cluster.start_web("web2")]
    return cluster


def value(samples, name: str, **labels) -> float:
    return samples[name][tuple(sorted(labels.items()))]


def post_all(base_url: str, key: str, bodies: list[dict]) -> list[httpx.Response]:
    async def main():
        async with httpx.AsyncClient(timeout=60, headers={"Authorization": f"Bearer {key}"}) as client:
            return await asyncio.gather(*(client.post(f"{base_url}/v1/chat/completions", json=body) for body in bodies))

    return asyncio.run(main())


def test_metrics_on_either_web_process_count_what_both_workers_served(deployment):
    web1, web2 = deployment.web_urls
    words = lambda n: {"model": "echo", "messages": [{"role": "user", "content": " ".join(["x"] * n)}]}  # noqa: E731
    first = post_all(web1, deployment.api_key, [words(10 + i) for i in range(8)])
    second = post_all(web2, deployment.api_key, [{**words(30), "max_tokens": 5} for _ in range(4)])
    assert all(r.status_code == 200 for r in first + second)

    rows = deployment.query(
        "SELECT worker, finish_reason, prompt_tokens, completion_tokens "
        "FROM monitoring_requestrecord WHERE model_name = 'echo'"
    )
    assert len(rows) == 12
    assert len({worker for worker, *_ in rows}) == 2, "both workers should have served some"
    for base_url in (web1, web2):
        samples = scrape(base_url)
        assert value(samples, "vllm:request_success_total", model_name="echo", finished_reason="stop") == 8
        assert value(samples, "vllm:request_success_total", model_name="echo", finished_reason="length") == 4
        assert value(samples, "vllm:prompt_tokens_total", model_name="echo") == sum(range(10, 18)) + 4 * 30
        assert value(samples, "vllm:generation_tokens_total", model_name="echo") == sum(range(10, 18)) + 4 * 5
        assert value(samples, "vllm:prompt_tokens_total", model_name="echo") == sum(r[2] for r in rows)
        assert value(samples, "vllm:e2e_request_latency_seconds_count", model_name="echo") == 12
        assert value(samples, "vllm:request_queue_time_seconds_count", model_name="echo") == 12
        assert value(samples, "vllm:time_to_first_token_seconds_count", model_name="echo") == 12


def wait_for_load(base_url: str, model: str, running: int, waiting: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(base_url)
        now = (
            value(samples, "vllm:num_requests_running", model_name=model),
            value(samples, "vllm:num_requests_waiting", model_name=model),
        )
        if now == (running, waiting):
            return
        assert time.monotonic() < deadline, f"expected {model} running/waiting {(running, waiting)}, last saw {now}"
        time.sleep(0.1)


def test_running_and_waiting_follow_the_worker_and_its_queue(deployment):
    """slow-echo's only worker runs one job at a time: of three requests, one runs and two wait."""
    web1, web2 = deployment.web_urls
    body = {"model": "slow-echo", "messages": [{"role": "user", "content": " ".join(["z"] * 40)}]}  # ~2.4 s each
    wait_for_load(web2, "slow-echo", 0, 0)
    with ThreadPoolExecutor(1) as pool:
        responses = pool.submit(post_all, web1, deployment.api_key, [body] * 3)
        wait_for_load(web2, "slow-echo", 1, 2)
        wait_for_load(web2, "slow-echo", 1, 1)
        assert [r.status_code for r in responses.result()] == [200, 200, 200]
    wait_for_load(web2, "slow-echo", 0, 0)


def test_status_lists_every_web_and_worker_process(deployment):
    status = httpx.get(
        f"{deployment.web_urls[0]}/v1/system/status",
        timeout=10,
        headers={"Authorization": f"Bearer {deployment.api_key}"},
    ).json()
    hosts = {host["pid"]: host for host in status["hosts"]}
    web_pids = {proc.process.pid for proc in deployment.procs if proc.name.startswith("web")}
    worker_pids = {proc.process.pid for proc in deployment.workers}
    assert {pid for pid, host in hosts.items() if host["role"] == "web"} == web_pids
    assert {pid for pid, host in hosts.items() if host["role"] == "worker"} == worker_pids
    for pid in worker_pids:
        assert hosts[pid]["name"] == deployment.worker_id(pid)
    for host in hosts.values():
        assert host["latest"]["memory_total_bytes"] > 0 and host["latest"]["process_rss_bytes"] > 0
        assert host["averages"]["1m"]["samples"] >= 1 and host["averages"]["5m"]["cpu_percent"] is not None
