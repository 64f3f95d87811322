"""Distributed mode end to end: daphne + Celery workers + Redis + PostgreSQL, real clients."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from websockets.sync.client import connect as ws_connect

pytestmark = [pytest.mark.distributed, pytest.mark.live]

LONG_PROMPT = " ".join(f"w{i}" for i in range(400))


@pytest.fixture(scope="module")
def deployment(cluster):
    """One worker hosting the real model and echo, a second hosting echo, one web process."""
    cluster.start_worker("w1", "smollm2,echo", concurrency=4)
    cluster.start_worker("w2", "echo", concurrency=4)
    cluster.base_url = cluster.start_web()
    return cluster


@pytest.fixture(scope="module")
def sdk(deployment):
    return openai.OpenAI(base_url=f"{deployment.base_url}/v1", api_key=deployment.api_key, max_retries=0, timeout=60)


def records(cluster, where: str = "", *params) -> list[dict]:
    columns = [
        "request_id",
        "worker",
        "status_code",
        "finish_reason",
        "completion_tokens",
        "queue_wait_ms",
        "error_type",
        "model_name",
        "ttft_ms",
    ]
    rows = cluster.query(
        f"SELECT {', '.join(columns)} FROM monitoring_requestrecord {where} ORDER BY created_at", *params
    )
    return [dict(zip(columns, row)) for row in rows]


def wait_for_records(cluster, count: int, where: str = "", *params, timeout: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout
    while len(found := records(cluster, where, *params)) < count:
        assert time.monotonic() < deadline, f"expected {count} records, have {found}"
        time.sleep(0.2)
    return found


def test_health_and_status_report_distributed(deployment):
    assert httpx.get(f"{deployment.base_url}/health").json()["status"] == "ok"
    status = httpx.get(
        f"{deployment.base_url}/v1/system/status", headers={"Authorization": f"Bearer {deployment.api_key}"}
    ).json()
    assert status["mode"] == "distributed"


def test_chat_and_stream_on_the_real_model(deployment, sdk):
    kwargs = dict(
        model="smollm2",
        messages=[{"role": "user", "content": "Name three fruits."}],
        max_tokens=16,
        temperature=0,
        seed=5,
    )
    whole = sdk.chat.completions.create(**kwargs)
    assert whole.choices[0].message.content.strip()
    assert 0 < whole.usage.completion_tokens <= 16
    pieces, usage = [], None
    for chunk in sdk.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}):
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    assert "".join(pieces) == whole.choices[0].message.content
    assert usage.completion_tokens == whole.usage.completion_tokens
    mine = records(deployment, "WHERE model_name = 'smollm2' AND status_code = 200")
    assert len(mine) == 2
    w1 = deployment.worker_id(deployment.procs[0].process.pid)
    assert all(r["worker"] == w1 and r["queue_wait_ms"] is not None and r["ttft_ms"] for r in mine)


def test_cancelled_stream_stops_generation_on_the_worker(deployment, sdk):
    stream = sdk.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Tell a long story."}], max_tokens=1500, stream=True
    )
    for index, _ in enumerate(stream):
        if index == 5:
            break
    stream.close()
    (record,) = wait_for_records(deployment, 1, "WHERE finish_reason = 'cancelled' AND model_name = 'smollm2'")
    assert record["status_code"] == 499
    assert record["completion_tokens"] < 150, "the worker kept generating after the client left"
    after = sdk.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    assert after.choices[0].message.content is not None


def test_errors_come_back_from_the_worker(deployment, sdk):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "hi"}], max_tokens=9000)
    assert caught.value.body["code"] == "context_length_exceeded"


def test_concurrent_requests_spread_over_both_workers(deployment):
    async def main():
        async with httpx.AsyncClient(timeout=60, headers={"Authorization": f"Bearer {deployment.api_key}"}) as c:
            body = {"model": "echo", "messages": [{"role": "user", "content": " ".join(["x"] * 25)}]}
            return await asyncio.gather(
                *(c.post(f"{deployment.base_url}/v1/chat/completions", json=body) for _ in range(8))
            )

    responses = asyncio.run(main())
    assert all(r.status_code == 200 for r in responses)
    ids = [r.json()["id"].removeprefix("chatcmpl-") for r in responses]
    rows = wait_for_records(deployment, 8, "WHERE request_id = ANY(%s)", ids)
    assert len({r["worker"] for r in rows}) == 2, rows
    assert all(r["completion_tokens"] == 25 for r in rows)


def test_websocket_streams_and_cancels_through_workers(deployment):
    url = deployment.base_url.replace("http://", "ws://") + "/ws/v1/chat/completions"
    with ws_connect(
        url, additional_headers={"Authorization": f"Bearer {deployment.api_key}"}, open_timeout=30
    ) as socket:
        socket.send(
            json.dumps(
                {
                    "type": "request",
                    "body": {"model": "echo", "messages": [{"role": "user", "content": "over the socket"}]},
                }
            )
        )
        frames = []
        while (frame := socket.recv(timeout=30)) != "[DONE]":
            frames.append(json.loads(frame))
        text = "".join(f["choices"][0]["delta"].get("content", "") for f in frames if f.get("choices"))
        assert text == "over the socket"

        socket.send(
            json.dumps(
                {"type": "request", "body": {"model": "echo", "messages": [{"role": "user", "content": LONG_PROMPT}]}}
            )
        )
        received = 0
        while received < 3:
            if json.loads(socket.recv(timeout=30)).get("choices"):
                received += 1
        socket.send(json.dumps({"type": "cancel"}))
        while socket.recv(timeout=30) != "[DONE]":
            pass
    (record,) = wait_for_records(deployment, 1, "WHERE finish_reason = 'cancelled' AND model_name = 'echo'")
    assert record["completion_tokens"] < 100 and record["worker"]


def test_stopped_worker_drains_then_leaves(deployment):
    """SIGTERM: the worker stops advertising itself, finishes its running request, then exits dead."""
    leaving = deployment.start_worker("leaving", "slow-echo", concurrency=1)
    pid = leaving.process.pid
    body = {"model": "slow-echo", "messages": [{"role": "user", "content": " ".join(["z"] * 40)}]}
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(
            httpx.post,
            f"{deployment.base_url}/v1/chat/completions",
            json=body,
            timeout=60,
            headers={"Authorization": f"Bearer {deployment.api_key}"},
        )
        deadline = time.monotonic() + 20
        while not deployment.query(
            "SELECT 1 FROM models_registry_workerregistration WHERE pid = %s AND in_flight > 0", pid
        ):
            assert time.monotonic() < deadline, "the request never reached the worker"
            time.sleep(0.1)
        leaving.process.send_signal(signal.SIGTERM)
        states = set()
        deadline = time.monotonic() + 60
        while leaving.process.poll() is None:
            assert time.monotonic() < deadline, "the worker did not exit after SIGTERM"
            states.add(deployment.worker_state(pid))
            time.sleep(0.05)
        response = running.result()
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] == 40
    assert "draining" in states
    assert leaving.process.returncode == 0
    assert deployment.worker_state(pid) == "dead"


def test_model_without_a_worker_is_a_fast_503(deployment, sdk):
    with pytest.raises(openai.APIStatusError) as caught:
        sdk.chat.completions.create(model="orphan", messages=[{"role": "user", "content": "hi"}], timeout=10)
    assert caught.value.status_code == 503 and int(caught.value.response.headers["Retry-After"]) >= 1
    # Every worker here is pinned with --models: none may load it.
    assert "Model `orphan` cannot be loaded now: no live worker takes new models" in caught.value.message


def _stream_until_error(base_url: str, key: str, body: dict, on_chunk) -> tuple[list[str], dict | None]:
    """Read an SSE stream; return the texts received and the in-band error, if any."""
    texts, error = [], None
    # Generous per-read bound: on a loaded 2-core machine a kill is still seen in seconds.
    with httpx.stream(
        "POST", f"{base_url}/v1/chat/completions", json=body, timeout=90, headers={"Authorization": f"Bearer {key}"}
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                error = event["error"]
                break
            if event["choices"] and event["choices"][0]["delta"].get("content"):
                texts.append(event["choices"][0]["delta"]["content"])
                on_chunk(len(texts))
    return texts, error


def test_killed_worker_fails_its_request_and_queued_ones_move_on(deployment):
    victim = deployment.start_worker("victim", "slow-echo", concurrency=1)
    victim_id = deployment.worker_id(victim.process.pid)
    body = {"model": "slow-echo", "stream": True, "messages": [{"role": "user", "content": LONG_PROMPT}]}

    async def queued_requests():
        async with httpx.AsyncClient(timeout=90, headers={"Authorization": f"Bearer {deployment.api_key}"}) as c:
            short = {"model": "slow-echo", "messages": [{"role": "user", "content": "a b c"}]}
            return await asyncio.gather(
                *(c.post(f"{deployment.base_url}/v1/chat/completions", json=short) for _ in range(2))
            )

    loop = asyncio.new_event_loop()
    queued = None

    def kill_after_a_few(count: int):
        nonlocal queued
        if count == 3 and queued is None:
            # Two more requests wait in Redis behind the busy victim (concurrency 1).
            queued = loop.run_in_executor(None, lambda: asyncio.run(queued_requests()))
            time.sleep(1.0)
            victim.stop(signal.SIGKILL)

    texts, error = _stream_until_error(deployment.base_url, deployment.api_key, body, kill_after_a_few)
    assert error is not None and error["code"] == "worker_lost", (texts, error)
    assert len(texts) < 400
    (failed,) = wait_for_records(deployment, 1, "WHERE error_type = 'worker_lost'")
    assert failed["worker"] == victim_id and failed["status_code"] == 502

    rescuer = deployment.start_worker("rescuer", "slow-echo", concurrency=2)
    responses = loop.run_until_complete(queued)
    loop.close()
    assert [r.status_code for r in responses] == [200, 200]
    rescuer_id = deployment.worker_id(rescuer.process.pid)
    queued_ids = [r.json()["id"].removeprefix("chatcmpl-") for r in responses]
    served = records(deployment, "WHERE request_id = ANY(%s)", queued_ids)
    assert {r["worker"] for r in served} == {rescuer_id} and len(served) == 2
    # The surviving workers' heartbeats mark the silent one dead.
    deadline = time.monotonic() + 20
    while deployment.worker_state(victim.process.pid) != "dead":
        assert time.monotonic() < deadline, "the killed worker was never marked dead"
        time.sleep(0.3)


def test_redis_outage_is_a_quick_503_and_service_recovers(deployment, sdk):
    deployment.stop_redis()
    try:
        with pytest.raises(openai.APIStatusError) as caught:
            sdk.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}], timeout=15)
        assert caught.value.status_code == 503
    finally:
        deployment.start_redis()
    deadline = time.monotonic() + 60
    while True:
        try:
            reply = sdk.chat.completions.create(
                model="echo", messages=[{"role": "user", "content": "back again"}], timeout=15
            )
            break
        except openai.APIStatusError as exc:
            assert exc.status_code == 503 and time.monotonic() < deadline, exc
            time.sleep(1)
    assert reply.choices[0].message.content == "back again"
