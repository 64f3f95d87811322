"""Per-key limits hold across two daphne web processes that share one Redis."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

pytestmark = [pytest.mark.distributed, pytest.mark.live]

CHAT = {"model": "echo", "max_tokens": 2, "messages": [{"role": "user", "content": "one two three"}]}


@pytest.fixture(scope="module")
def webs(cluster):
    cluster.start_worker("w1", "echo", concurrency=8)
    return [cluster.start_web("web1"), cluster.start_web("web2")]


def post_all(webs: list[str], key: str, count: int, body: dict = CHAT) -> list[httpx.Response]:
    def post(i: int) -> httpx.Response:
        return httpx.post(f"{webs[i % len(webs)]}/v1/chat/completions", json=body, timeout=60,
                          headers={"Authorization": f"Bearer {key}"})

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(post, range(count)))


def away_from_a_minute_edge() -> None:
    """The RPM window is the Redis server's clock minute; keep a burst inside one window."""
    into = time.time() % 60
    if into > 50:
        time.sleep(60 - into + 0.5)


def test_rpm_holds_across_two_web_processes(cluster, webs):
    key = cluster.manage("issue_api_key", "rpm10", "--rpm", "10").strip()
    away_from_a_minute_edge()
    responses = post_all(webs, key, 30)
    codes = [r.status_code for r in responses]
    assert codes.count(200) == 10, codes
    assert codes.count(429) == 20, codes
    # Both processes admitted and rejected some: the limit is shared, not per process.
    for web in (0, 1):
        assert {r.status_code for r in responses[web::2]} == {200, 429}
    for response in responses:
        if response.status_code == 429:
            assert 1 <= int(response.headers["Retry-After"]) <= 60
            assert response.json()["error"]["code"] == "rate_limit_exceeded"
            assert response.json()["error"]["type"] == "requests"
    rejected = cluster.query("SELECT count(*) FROM monitoring_requestrecord r JOIN models_registry_apikey k "
                             "ON r.api_key_id = k.id WHERE k.name = 'rpm10' AND r.status_code = 429")
    assert rejected[0][0] == 20


def test_tpm_holds_across_two_web_processes(cluster, webs):
    """Each request uses 5 tokens (3 prompt + 2 completion), sent one at a time, alternating web processes.
    Tokens count when a request ends, so the window admits requests until its total reaches 20:
    the 5th request is refused by whichever process gets it, and so is every later one."""
    key = cluster.manage("issue_api_key", "tpm20", "--tpm", "20").strip()
    away_from_a_minute_edge()
    responses = [httpx.post(f"{webs[i % 2]}/v1/chat/completions", json=CHAT, timeout=60,
                            headers={"Authorization": f"Bearer {key}"}) for i in range(8)]
    assert [r.status_code for r in responses] == [200] * 4 + [429] * 4
    assert sum(r.json()["usage"]["total_tokens"] for r in responses[:4]) == 20
    for response in responses[4:]:
        assert 1 <= int(response.headers["Retry-After"]) <= 60
        assert response.json()["error"]["code"] == "rate_limit_exceeded"
        assert "20 tokens per minute" in response.json()["error"]["message"]


def test_concurrency_holds_across_two_web_processes(cluster, webs):
    key = cluster.manage("issue_api_key", "conc2", "--concurrency", "2").strip()
    slow = {**CHAT, "max_tokens": 40, "messages": [{"role": "user", "content": " ".join(["w"] * 40)}]}
    codes = [r.status_code for r in post_all(webs, key, 8, slow)]  # 40 tokens at 20 ms: ~0.8 s each
    assert codes.count(200) == 2 and codes.count(429) == 6, codes
    # Every slot was given back: the next two run.
    assert [r.status_code for r in post_all(webs, key, 2)] == [200, 200]
