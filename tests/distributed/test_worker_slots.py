"""A worker takes as many jobs as its engines have slots, the rest wait in Redis up to the
model's `max_waiting`, and the web side reads every reply however short its polls are."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest
import redis
from channels_redis.core import RedisChannelLayer

from serving.dispatch.distributed import ReplyReader

from .cluster import Cluster, _wait

pytestmark = [pytest.mark.distributed, pytest.mark.live]

# SmolLM2 repeats this far past the test's needs (greedy), so the request holds its slot.
ENDLESS = "Repeat the word 'apple' forever, separated by spaces."


@pytest.fixture(scope="module")
def deployment(cluster, gguf_path):
    """`three`: the real model with 3 slots. `single`: 1 slot and room for 1 waiting job."""
    cluster.manage("register_model", "three", "--source", gguf_path, "--engine", "llama_cpp", "--option", "parallel=3")
    cluster.manage(
        "register_model",
        "single",
        "--source",
        gguf_path,
        "--engine",
        "llama_cpp",
        "--option",
        "parallel=1",
        "--option",
        "max_waiting=1",
    )
    cluster.base_url = cluster.start_web()
    return cluster


def pool_size_by_celery(cluster: Cluster, name: str) -> int:
    """The worker's pool size, asked over Celery's remote control."""
    return cluster.inspect(name, "stats")["pool"]["max-concurrency"]


@pytest.mark.parametrize(
    "concurrency, line",
    [
        (None, "pool concurrency 3 = engine slots (three 3)"),
        (8, "pool concurrency 3 = engine slots (three 3); --concurrency 8 lowered"),
        (2, "pool concurrency 2 from --concurrency (engine slots: three 3)"),
    ],
)
def test_pool_concurrency_follows_the_engine_slots(deployment, concurrency, line):
    name = f"three-{concurrency}"
    worker = deployment.start_worker(name, "three", concurrency=concurrency)
    try:
        expected = 2 if concurrency == 2 else 3
        assert pool_size_by_celery(deployment, name) == expected
        assert deployment.worker_concurrency(worker.process.pid) == expected
        assert line in worker.log.read_text()
    finally:
        worker.stop()


def chat(cluster: Cluster, content: str, **fields) -> httpx.Response:
    return httpx.post(
        f"{cluster.base_url}/v1/chat/completions",
        timeout=120,
        headers={"Authorization": f"Bearer {cluster.api_key}"},
        json={"model": "single", "messages": [{"role": "user", "content": content}], "temperature": 0, **fields},
    )


def test_a_full_queue_refuses_exactly_the_excess_with_429_and_nothing_is_lost(deployment):
    worker = deployment.start_worker("single", "single", concurrency=None)
    queue = redis.Redis.from_url(deployment.redis_url)
    assert deployment.worker_concurrency(worker.process.pid) == 1
    headers = {"Authorization": f"Bearer {deployment.api_key}"}
    blocker = {
        "model": "single",
        "stream": True,
        "max_tokens": 1500,
        "temperature": 0,
        "messages": [{"role": "user", "content": ENDLESS}],
    }
    answers: dict[str, httpx.Response] = {}
    with httpx.stream(
        "POST", f"{deployment.base_url}/v1/chat/completions", json=blocker, headers=headers, timeout=120
    ) as stream:
        assert stream.status_code == 200
        events = (
            json.loads(line[6:]) for line in stream.iter_lines() if line.startswith("data: ") and line != "data: [DONE]"
        )
        while not next(events)["choices"][0]["delta"].get("content"):
            pass
        # The blocker holds the only slot; the next job waits in Redis: the worker does not take it.
        waiting = threading.Thread(target=lambda: answers.update(waiting=chat(deployment, "Say hello.", max_tokens=8)))
        waiting.start()
        _wait(lambda: queue.llen("model.single") == 1, 30, "the second job queued")
        refused = [chat(deployment, "Say hi.", max_tokens=8) for _ in range(3)]
        # Still streaming: the refusals came while the slot was busy and the queue full.
        assert next(events)["choices"][0]["finish_reason"] is None
        assert queue.llen("model.single") == 1
        for _ in events:  # let the blocker finish
            pass
    waiting.join(timeout=120)

    for answer in refused:
        assert answer.status_code == 429, answer.text
        assert answer.json()["error"]["code"] == "model_busy"
        assert 1 <= int(answer.headers["Retry-After"]) <= 60
    assert answers["waiting"].status_code == 200, answers["waiting"].text
    assert answers["waiting"].json()["choices"][0]["message"]["content"]
    assert queue.llen("model.single") == 0
    rows = deployment.query("SELECT status_code FROM monitoring_requestrecord WHERE model_name = 'single'")
    assert sorted(row[0] for row in rows) == [200, 200, 429, 429, 429]
    worker.stop()


@pytest.mark.timeout(120)
async def test_many_short_polls_never_lose_a_reply(tmp_path):
    """A poll that times out must not drop replies: with many requests in one web process, one
    request's receive may take another's reply off Redis and buffer it for that one."""
    server = Cluster(tmp=tmp_path)
    server.start_redis()
    # As the settings configure it for distributed mode.
    layer = RedisChannelLayer(hosts=[{"address": server.redis_url, "socket_timeout": 30}], capacity=1000)
    requests, count = 8, 100
    timeouts = 0

    async def read(channel: str) -> list[int]:
        nonlocal timeouts
        replies = ReplyReader(layer, channel)
        received, quiet_since = [], time.monotonic()
        try:
            # Until all came, or nothing came for 3 s (a lost reply never comes).
            while len(received) < count and time.monotonic() - quiet_since < 3:
                reply = await replies.next(timeout=0.0005)
                if reply is None:
                    timeouts += 1
                else:
                    received.append(reply["number"])
                    quiet_since = time.monotonic()
        finally:
            await replies.close()
        return received

    try:
        channels = [await layer.new_channel() for _ in range(requests)]
        for number in range(count):
            for channel in channels:
                await layer.send(channel, {"type": "n", "number": number})
        async with asyncio.timeout(60):  # a lost reply used to leave its reader stuck for good
            results = await asyncio.gather(*(read(channel) for channel in channels))
        assert timeouts > 0  # polls did time out while receives were under way
        assert results == [list(range(count))] * requests
    finally:
        await layer.close_pools()
        server.stop_redis()


class CancelSwallowingLayer(RedisChannelLayer):
    """channels_redis with the race of redis/redis-py#2028 made certain: the first cancellation of
    a receive is swallowed and the receive goes on waiting, as seen when a worker died under
    several streams (benchmarks/host_kills.py). Unmodified, cancelling four busy receives at once
    lost a cancellation in about one round in ten here."""

    swallowed = 0

    async def receive(self, channel):
        try:
            return await super().receive(channel)
        except asyncio.CancelledError:
            CancelSwallowingLayer.swallowed += 1
            return await super().receive(channel)


@pytest.mark.timeout(60)
async def test_closing_ends_a_receive_that_swallowed_its_cancellation(tmp_path):
    server = Cluster(tmp=tmp_path)
    server.start_redis()
    layer = CancelSwallowingLayer(hosts=[{"address": server.redis_url, "socket_timeout": 30}])
    try:
        replies = ReplyReader(layer, await layer.new_channel())
        assert await replies.next(timeout=0.05) is None  # a receive is now in flight
        async with asyncio.timeout(10):  # it used to wait for a reply that never comes
            await replies.close()
        assert CancelSwallowingLayer.swallowed == 1
    finally:
        await layer.close_pools()
        server.stop_redis()
