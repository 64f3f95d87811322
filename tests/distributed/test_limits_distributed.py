"""Per-key limits hold across two daphne web processes that share one Redis."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import httpx
import pytest
import redis

from serving.limits import DEFAULT_PREFIX

pytestmark = [pytest.mark.distributed, pytest.mark.live]

CHAT = {"model": "echo", "max_tokens": 2, "messages": [{"role": "user", "content": "one two three"}]}
# 2,000 tokens at 20 ms: a stream that runs for 40 s unless its client leaves first.
LONG_STREAM = {
    "model": "echo",
    "max_tokens": 2000,
    "stream": True,
    "messages": [{"role": "user", "content": " ".join(["w"] * 2000)}],
}
# Only turns a hang into a failure.
DEADLINE_S = 120


@pytest.fixture(scope="module")
def webs(cluster):
    cluster.start_worker("w1", "echo", concurrency=8)
    return [cluster.start_web("web1"), cluster.start_web("web2")]


def post_all(webs: list[str], key: str, count: int, body: dict = CHAT) -> list[httpx.Response]:
    def post(i: int) -> httpx.Response:
        return httpx.post(
            f"{webs[i % len(webs)]}/v1/chat/completions",
            json=body,
            timeout=DEADLINE_S,
            headers={"Authorization": f"Bearer {key}"},
        )

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(post, range(count)))


def limiter_keys(cluster, key_name: str, pattern: str) -> list[bytes]:
    """The limiter's Redis keys for the API key named `key_name`, e.g. pattern "rpm:*"."""
    key_id = cluster.query("SELECT id FROM models_registry_apikey WHERE name = %s", key_name)[0][0]
    client = redis.Redis.from_url(cluster.redis_url)
    try:
        return list(client.scan_iter(match=f"{DEFAULT_PREFIX}:{key_id}:{pattern}"))
    finally:
        client.close()


def in_one_window(cluster, name: str, limit: list[str], kind: str, run):
    """Issue a key with `limit` and call run(key); again with a new key if the requests fell in
    two of the limiter's one-minute windows (its clock crossed a minute meanwhile).

    The limiter counts each window under its own Redis key, so the count of keys says whether
    a run met one window or two, whatever the wall clock and however slow the machine.
    """
    for attempt in range(3):
        key_name = f"{name}-{attempt}"
        key = cluster.manage("issue_api_key", key_name, *limit).strip()
        result = run(key)
        windows = limiter_keys(cluster, key_name, f"{kind}:*")
        assert windows, f"no {kind} window was counted"
        if len(windows) == 1:
            return key_name, result
    pytest.fail("three runs in a row met two minute windows")


def test_rpm_holds_across_two_web_processes(cluster, webs):
    def run(key: str) -> tuple[list[httpx.Response], list[httpx.Response]]:
        burst = post_all(webs, key, 30)
        # Then each process refuses on its own: both read the one shared count.
        after = [
            httpx.post(
                f"{web}/v1/chat/completions", json=CHAT, timeout=DEADLINE_S, headers={"Authorization": f"Bearer {key}"}
            )
            for web in webs
        ]
        return burst, after

    name, (responses, after) = in_one_window(cluster, "rpm10", ["--rpm", "10"], "rpm", run)
    codes = [r.status_code for r in responses]
    # 15 went to each process: a limit per process would have admitted 20.
    assert codes.count(200) == 10, codes
    assert codes.count(429) == 20, codes
    assert [r.status_code for r in after] == [429, 429]
    for response in responses + after:
        if response.status_code == 429:
            assert 1 <= int(response.headers["Retry-After"]) <= 60
            assert response.json()["error"]["code"] == "rate_limit_exceeded"
            assert response.json()["error"]["type"] == "requests"
    rejected = cluster.query(
        "SELECT count(*) FROM monitoring_requestrecord r JOIN models_registry_apikey k "
        "ON r.api_key_id = k.id WHERE k.name = %s AND r.status_code = 429",
        name,
    )
    assert rejected[0][0] == 22


def test_tpm_holds_across_two_web_processes(cluster, webs):
    """Each request uses 5 tokens (3 prompt + 2 completion), sent one at a time, alternating web processes.
    Tokens count when a request ends, so the window admits requests until its total reaches 20:
    the 5th request is refused by whichever process gets it, and so is every later one."""

    def run(key: str) -> list[httpx.Response]:
        return [
            httpx.post(
                f"{webs[i % 2]}/v1/chat/completions",
                json=CHAT,
                timeout=DEADLINE_S,
                headers={"Authorization": f"Bearer {key}"},
            )
            for i in range(8)
        ]

    _, responses = in_one_window(cluster, "tpm20", ["--tpm", "20"], "tpm", run)
    assert [r.status_code for r in responses] == [200] * 4 + [429] * 4
    assert sum(r.json()["usage"]["total_tokens"] for r in responses[:4]) == 20
    for response in responses[4:]:
        assert 1 <= int(response.headers["Retry-After"]) <= 60
        assert response.json()["error"]["code"] == "rate_limit_exceeded"
        assert "20 tokens per minute" in response.json()["error"]["message"]


def test_concurrency_holds_across_two_web_processes(cluster, webs):
    key = cluster.manage("issue_api_key", "conc2", "--concurrency", "2").strip()
    headers = {"Authorization": f"Bearer {key}"}
    with ExitStack() as streams:
        # One stream through each process. Its headers come after the first token, so by then
        # the request holds its slot, and it keeps it until this client closes it.
        for web in webs:
            stream = streams.enter_context(
                httpx.stream(
                    "POST", f"{web}/v1/chat/completions", json=LONG_STREAM, headers=headers, timeout=DEADLINE_S
                )
            )
            assert stream.status_code == 200
        codes = [r.status_code for r in post_all(webs, key, 6)]
        assert codes == [429] * 6, codes
    # The web processes saw the clients leave and gave the slots back: the counter is gone.
    deadline = time.monotonic() + DEADLINE_S
    while limiter_keys(cluster, "conc2", "concurrency"):
        assert time.monotonic() < deadline, "the closed streams' slots were never given back"
        time.sleep(0.1)
    assert [r.status_code for r in post_all(webs, key, 2)] == [200, 200]
