"""Per-key limits: the embedded limiter through the ASGI stack, and the Redis limiter on real Redis."""

import asyncio
import time
import uuid

import pytest
import redis.asyncio as aioredis
from asgiref.sync import sync_to_async

from api.openai.completions import completion_serve
from api.openai.format import CHAT
from models_registry.models import ApiKey
from models_registry.services.api_keys import api_key_issue
from monitoring.models import RequestRecord
from serving import limits
from serving.errors import RateLimited
from serving.limits import KeyLimits, LocalLimiter, RedisLimiter
from tests.api.sse import sse_events
from tests.held import HeldPost, hang_up_all, long_chat, register_long_echo, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

REDIS_URL = "redis://127.0.0.1:6379/0"


class Clock:
    """A clock that stays in the middle of one minute window until a test moves it."""

    def __init__(self):
        self.now = (time.time() // 60) * 60 + 10

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    """A fresh embedded limiter on a controllable clock, so windows never roll over mid-test."""
    clock = Clock()
    monkeypatch.setattr(limits, "_local", LocalLimiter(clock=clock))
    return clock


async def set_limits(api_key: str, **fields) -> ApiKey:
    prefix = api_key.split("-")[1]
    await sync_to_async(ApiKey.objects.filter(prefix=prefix).update)(**fields)
    return await sync_to_async(ApiKey.objects.get)(prefix=prefix)


def chat(content="one two three", **extra):
    return {"model": "echo", "messages": [{"role": "user", "content": content}], **extra}


def assert_rate_limited(response, retry_after_at_most=60):
    assert response.status_code == 429
    assert 1 <= int(response.headers["Retry-After"]) <= retry_after_at_most
    error = response.json()["error"]
    assert error["type"] == "requests" and error["code"] == "rate_limit_exceeded"
    assert set(error) == {"message", "type", "param", "code"}
    return error


async def test_requests_per_minute(client, echo_model, api_key, clock):
    key = await set_limits(api_key, rpm_limit=3)
    for _ in range(3):
        assert (await client.post("/v1/chat/completions", json=chat(max_tokens=1))).status_code == 200
    rejected = await client.post("/v1/chat/completions", json=chat(max_tokens=1))
    error = assert_rate_limited(rejected)
    assert int(rejected.headers["Retry-After"]) == 50  # the clock is 10 s into its minute
    assert "3 requests per minute" in error["message"]
    # The same limit holds on the legacy endpoint and for streams.
    assert_rate_limited(await client.post("/v1/completions", json={"model": "echo", "prompt": "a"}))
    assert_rate_limited(await client.post("/v1/chat/completions", json=chat(stream=True)))

    records = await sync_to_async(list)(
        RequestRecord.objects.filter(api_key_id=key.pk).values_list("status_code", "error_type")
    )
    assert sorted(records) == [(200, "")] * 3 + [(429, "rate_limit_exceeded")] * 3

    clock.now += 60  # the next window
    assert (await client.post("/v1/chat/completions", json=chat(max_tokens=1))).status_code == 200


async def test_tokens_per_minute_count_prompt_and_completion(client, echo_model, api_key, clock):
    await set_limits(api_key, tpm_limit=10)
    first = await client.post("/v1/chat/completions", json=chat(max_tokens=2))  # 3 + 2 tokens
    assert first.json()["usage"]["total_tokens"] == 5
    second = await client.post("/v1/chat/completions", json=chat(stream=True))  # 3 + 3, streamed
    assert sse_events(second.text)[-1] == "[DONE]"
    # 11 tokens used: over the limit.
    error = assert_rate_limited(await client.post("/v1/chat/completions", json=chat(max_tokens=1)))
    assert "10 tokens per minute" in error["message"]
    clock.now += 60
    assert (await client.post("/v1/chat/completions", json=chat(max_tokens=1))).status_code == 200


async def test_tokens_under_the_limit_are_admitted(client, echo_model, api_key, clock):
    await set_limits(api_key, tpm_limit=12)
    for _ in range(2):  # 5 + 5 = 10 < 12
        assert (await client.post("/v1/chat/completions", json=chat(max_tokens=2))).status_code == 200
    assert (await client.post("/v1/chat/completions", json=chat(max_tokens=2))).status_code == 200
    assert_rate_limited(await client.post("/v1/chat/completions", json=chat(max_tokens=2)))


@pytest.mark.model
async def test_tokens_per_minute_count_what_the_real_model_used(client, smollm2, api_key, clock):
    """SmolLM2's own tokenizer counts: the chat template's prompt tokens plus the completion's."""
    await set_limits(api_key, tpm_limit=50)
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8, "temperature": 0}
    first = await client.post("/v1/chat/completions", json=body)
    assert first.status_code == 200
    used = first.json()["usage"]["total_tokens"]
    assert used > 8  # the template alone is more than a few tokens
    # Admitted while the minute's total is under the limit, refused once it reaches it.
    responses = [first]
    while sum(r.json()["usage"]["total_tokens"] for r in responses) < 50:
        responses.append(await client.post("/v1/chat/completions", json=body))
        assert responses[-1].status_code == 200
    assert len(responses) == -(-50 // used)  # ceil: the request that crossed the limit still ran
    error = assert_rate_limited(await client.post("/v1/chat/completions", json=body))
    assert "50 tokens per minute" in error["message"]


async def wait_in_flight(key_id: int, count: int) -> None:
    await wait_until(lambda: limits._local.in_flight(key_id) == count, f"{count} requests of the key in flight")


async def test_concurrent_requests(asgi_app, client, echo_model, api_key, clock):
    key = await set_limits(api_key, concurrency_limit=2)
    await sync_to_async(register_long_echo)()
    # Two requests that hold their slots until their clients hang up: a plain one and a stream.
    held = [
        HeldPost(asgi_app, "/v1/chat/completions", body, key=api_key) for body in (long_chat(), long_chat(stream=True))
    ]
    try:
        await wait_in_flight(key.pk, 2)
        # Admitted is not yet answered: a stream's headers wait for its first chunk.
        await wait_until(lambda: held[1].sent, "the stream's first event")
        error = assert_rate_limited(await client.post("/v1/chat/completions", json=chat()), retry_after_at_most=1)
        assert "2 concurrent requests" in error["message"]
    finally:
        plain, streamed = await hang_up_all(held)
    assert plain == [] and streamed[0]["status"] == 200  # the stream had begun; neither had ended
    assert limits._local.in_flight(key.pk) == 0
    assert (await client.post("/v1/chat/completions", json=chat())).status_code == 200
    assert limits._local.in_flight(key.pk) == 0


async def test_errors_and_cancellation_give_the_slot_back(client, echo_model, api_key, clock):
    key = await set_limits(api_key, concurrency_limit=1)
    too_long = await client.post("/v1/chat/completions", json=chat(max_tokens=100_000))
    assert too_long.status_code == 400  # context overflow, after admission
    assert limits._local.in_flight(key.pk) == 0

    await sync_to_async(register_long_echo)()
    long = long_chat()
    task = asyncio.create_task(completion_serve(kind=CHAT, key=key, read_body=lambda: long))
    await wait_in_flight(key.pk, 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert limits._local.in_flight(key.pk) == 0
    assert (await client.post("/v1/chat/completions", json=chat())).status_code == 200


async def test_keys_without_limits_and_other_keys_are_not_limited(client, echo_model, api_key, clock):
    await set_limits(api_key, rpm_limit=1)
    other = await sync_to_async(api_key_issue)(name="other")
    assert (await client.post("/v1/chat/completions", json=chat())).status_code == 200
    assert_rate_limited(await client.post("/v1/chat/completions", json=chat()))
    response = await client.post(
        "/v1/chat/completions", json=chat(), headers={"Authorization": f"Bearer {other.plaintext}"}
    )
    assert response.status_code == 200


# The Redis backend, against the real Redis.


@pytest.fixture
async def redis_prefix():
    prefix = f"test:limits:{uuid.uuid4().hex}"
    yield prefix
    client = aioredis.from_url(REDIS_URL)
    try:
        async for name in client.scan_iter(match=f"{prefix}:*"):
            await client.delete(name)
    finally:
        await client.aclose()


async def away_from_a_window_edge():
    """Wait, if needed, so a test's requests fall inside one Redis minute window."""
    client = aioredis.from_url(REDIS_URL)
    try:
        seconds, micros = await client.time()
    finally:
        await client.aclose()
    into = (seconds + micros / 1e6) % 60
    if into > 55:
        await asyncio.sleep(60 - into + 0.1)


async def admit_all(limiter, key_limits, count):
    results = await asyncio.gather(*(limiter.admit(key_limits) for _ in range(count)), return_exceptions=True)
    admitted = [r for r in results if isinstance(r, limits.Admission)]
    rejected = [r for r in results if isinstance(r, RateLimited)]
    assert len(admitted) + len(rejected) == count, results
    return admitted, rejected


async def test_redis_rpm_holds_across_limiters(redis_prefix):
    await away_from_a_window_edge()
    # Two limiters stand for two web processes: they share nothing but Redis.
    first, second = RedisLimiter(REDIS_URL, prefix=redis_prefix), RedisLimiter(REDIS_URL, prefix=redis_prefix)
    key_limits = KeyLimits(key_id=1, rpm=10)
    (a_ok, a_no), (b_ok, b_no) = await asyncio.gather(
        admit_all(first, key_limits, 15), admit_all(second, key_limits, 15)
    )
    assert len(a_ok) + len(b_ok) == 10
    assert all(1 <= e.retry_after <= 60 for e in a_no + b_no)
    # Another key has its own counter.
    other_ok, _ = await admit_all(first, KeyLimits(key_id=2, rpm=10), 3)
    assert len(other_ok) == 3


async def test_redis_tpm_counts_tokens_at_the_end(redis_prefix):
    await away_from_a_window_edge()
    limiter = RedisLimiter(REDIS_URL, prefix=redis_prefix)
    key_limits = KeyLimits(key_id=1, tpm=100)
    admission = await limiter.admit(key_limits)
    await admission.finish(tokens=60)
    admission = await limiter.admit(key_limits)  # 60 < 100
    await admission.finish(tokens=60)
    await admission.finish(tokens=60)  # a second finish counts nothing
    with pytest.raises(RateLimited) as rejected:
        await limiter.admit(key_limits)  # 120 >= 100
    assert "100 tokens per minute" in rejected.value.message


async def test_redis_concurrency_is_released_and_has_a_ttl(redis_prefix):
    limiter = RedisLimiter(REDIS_URL, prefix=redis_prefix)
    key_limits = KeyLimits(key_id=1, concurrency=3)
    admitted, rejected = await admit_all(limiter, key_limits, 5)
    assert len(admitted) == 3 and all(e.retry_after == 1 for e in rejected)
    client = aioredis.from_url(REDIS_URL)
    try:
        name = f"{redis_prefix}:1:concurrency"
        assert int(await client.get(name)) == 3
        assert 0 < await client.ttl(name) <= limits.CONCURRENCY_TTL_SECONDS
        await admitted[0].finish()
        assert int(await client.get(name)) == 2
        await admitted[1].finish()
        await admitted[2].finish()
        assert await client.exists(name) == 0  # back to zero: nothing left behind
        # A release after the counter expired never drives it below zero.
        await limiter.release(key_limits, tokens=0)
        assert await client.exists(name) == 0
    finally:
        await client.aclose()
    again, _ = await admit_all(limiter, key_limits, 3)
    assert len(again) == 3


async def test_redis_unreachable_is_a_503():
    limiter = RedisLimiter("redis://127.0.0.1:1/0", prefix="unused", timeout=0.5)
    with pytest.raises(limits.ServiceUnavailable):
        await limiter.admit(KeyLimits(key_id=1, rpm=1))
