"""Backpressure through the ASGI stack on the real SmolLM2: a model's bounded queue answers 429
`model_busy` with Retry-After at once, the openai SDK's own retry then gets through, keys are
served round-robin, every request leaves one record, and /metrics shows the scheduler's state.

Requests are held open until the test hangs them up (tests.held), so every check waits on a
state, never on a duration.
"""

import asyncio
import json

import httpx
import openai
import pytest
from asgiref.sync import sync_to_async
from prometheus_client.parser import text_string_to_metric_families

from models_registry.services.api_keys import api_key_issue
from models_registry.services.served_models import served_model_register
from monitoring.models import RequestRecord
from serving.dispatch.embedded import engine_host
from tests.held import HeldPost, hang_up_all, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.model]


@pytest.fixture(scope="module", autouse=True)
def unload_models_afterwards():
    """The engine host is process-wide: free this module's four SmolLM2 engines when it is done."""
    yield
    engine_host().shutdown()


# SmolLM2 continues this by counting, far past anything a test waits for.
COUNTING = "1, 2, 3, 4,"


def register(gguf_path: str, name: str, **options):
    return served_model_register(
        name=name, source=gguf_path, engine="llama_cpp", context_length=2048, engine_options=options
    )


def counting(model: str, **extra) -> dict:
    return {"model": model, "prompt": COUNTING, "max_tokens": 2000, "temperature": 0, "stream": True, **extra}


def started(post: HeldPost) -> int | None:
    """The status a held request was answered with so far (None: nothing sent yet)."""
    return next((m["status"] for m in post.sent if m["type"] == "http.response.start"), None)


def headers_of(post: HeldPost) -> dict[str, str]:
    start = next(m for m in post.sent if m["type"] == "http.response.start")
    return {name.decode().lower(): value.decode() for name, value in start["headers"]}


def body_of(post: HeldPost) -> dict:
    return json.loads(b"".join(m.get("body", b"") for m in post.sent if m["type"] == "http.response.body"))


def parse_metrics(text: str) -> dict[str, dict[tuple, float]]:
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


async def scrape(client, model: str) -> dict[str, float]:
    """This model's samples from /metrics, by sample name."""
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    return {
        name: value
        for name, series in parse_metrics(response.text).items()
        for labels, value in series.items()
        if dict(labels) == {"model_name": model}
    }


async def test_an_overloaded_model_answers_the_excess_with_429_at_once(asgi_app, client, api_key, gguf_path):
    """parallel 2 and max_waiting 2: of 12 simultaneous requests 2 run, 2 wait, 8 get 429 at once."""
    await sync_to_async(register)(gguf_path, "smollm2-tight", parallel=2, max_waiting=2)
    held = [HeldPost(asgi_app, "/v1/completions", counting("smollm2-tight"), key=api_key) for _ in range(12)]
    try:
        await wait_until(
            lambda: sum(started(p) == 429 and p.sent[-1].get("more_body") is False for p in held) == 8,
            "eight requests refused",
        )
        await wait_until(lambda: sum(started(p) == 200 for p in held) == 2, "two streams running")
        engine = engine_host().engine_for("smollm2-tight")
        assert (engine.admission.running, engine.admission.waiting) == (2, 2)
        load = await scrape(client, "smollm2-tight")
        assert (load["vllm:num_requests_running"], load["vllm:num_requests_waiting"]) == (2, 2)
        assert 0 < load["vllm:kv_cache_usage_perc"] < 1
        refused = [p for p in held if started(p) == 429]
        for post in refused:
            assert int(headers_of(post)["retry-after"]) >= 1
            error = body_of(post)["error"]
            assert error["code"] == "model_busy" and set(error) == {"message", "type", "param", "code"}
            assert "smollm2-tight" in error["message"]
        assert sum(started(p) is None for p in held) == 2  # the two waiting have not been answered
    finally:
        await hang_up_all(held)

    records = [r async for r in RequestRecord.objects.all()]
    assert len(records) == 12 and len({r.request_id for r in records}) == 12
    statuses = sorted(r.status_code for r in records)
    assert statuses == [429] * 8 + [499] * 4  # the four let in ended when their clients hung up
    assert all(r.error_type == "model_busy" for r in records if r.status_code == 429)
    assert all(r.model_name == "smollm2-tight" and r.engine == "llama_cpp" for r in records)
    # The queue is empty again: the next request runs.
    response = await client.post("/v1/completions", json=counting("smollm2-tight", stream=False, max_tokens=4))
    assert response.status_code == 200, response.text
    load = await scrape(client, "smollm2-tight")
    assert (load["vllm:num_requests_running"], load["vllm:num_requests_waiting"]) == (0, 0)
    assert load["vllm:kv_cache_usage_perc"] == 0


async def test_the_openai_sdk_retries_a_busy_model_and_gets_through(asgi_app, api_key, gguf_path):
    await sync_to_async(register)(gguf_path, "smollm2-single", parallel=1, max_waiting=0)
    statuses: list[int] = []
    retry_after: list[int] = []

    async def seen(response: httpx.Response) -> None:
        statuses.append(response.status_code)
        if response.status_code == 429:
            retry_after.append(int(response.headers["retry-after"]))

    busy = HeldPost(asgi_app, "/v1/completions", counting("smollm2-single"), key=api_key)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=asgi_app),
        base_url="http://testserver",
        event_hooks={"response": [seen]},
        timeout=120,
    ) as http_client:
        sdk = openai.AsyncOpenAI(base_url="http://testserver/v1", api_key=api_key, http_client=http_client)
        try:
            await wait_until(lambda: started(busy) == 200, "the one slot taken")
            call = asyncio.create_task(
                sdk.completions.create(model="smollm2-single", prompt="Hello", max_tokens=4, temperature=0)
            )
            await wait_until(lambda: statuses, "the SDK's first answer")
            assert statuses == [429] and retry_after[0] >= 1
        finally:
            await busy.hang_up()  # the slot frees; the SDK waits Retry-After and tries again
        completion = await call
    assert completion.choices[0].finish_reason in ("stop", "length") and completion.usage.completion_tokens > 0
    assert statuses[0] == 429 and statuses[-1] == 200
    records = [r async for r in RequestRecord.objects.order_by("created_at")]
    assert [r.status_code for r in records if r.status_code != 499] == statuses  # each try recorded once


async def test_a_freed_slot_goes_to_another_key_before_a_bursts_next_request(asgi_app, api_key, gguf_path):
    await sync_to_async(register)(gguf_path, "smollm2-fair", parallel=1, max_waiting=4)
    other_key = (await sync_to_async(api_key_issue)(name="other")).plaintext
    body = counting("smollm2-fair")
    first = HeldPost(asgi_app, "/v1/completions", body, key=api_key)
    await wait_until(lambda: started(first) == 200, "key A's first request running")
    engine = engine_host().engine_for("smollm2-fair")
    burst = [HeldPost(asgi_app, "/v1/completions", body, key=api_key) for _ in range(2)]
    await wait_until(lambda: engine.admission.waiting == 2, "key A's burst waiting")
    other = HeldPost(asgi_app, "/v1/completions", body, key=other_key)
    await wait_until(lambda: engine.admission.waiting == 3, "key B's request waiting")
    try:
        await first.hang_up()
        # One slot: whichever starts streaming first was admitted first, and the others wait behind it.
        await wait_until(lambda: started(other) or any(started(p) for p in burst), "the next request admitted")
        assert started(other) == 200 and not any(started(p) for p in burst)
    finally:
        await hang_up_all([other, *burst])
    assert await RequestRecord.objects.acount() == 4


async def test_records_and_metrics_count_the_prefix_cache(client, gguf_path):
    await sync_to_async(register)(gguf_path, "smollm2-cache", parallel=2)
    system = {"role": "system", "content": "You answer questions about the rainbow in one short sentence. " * 4}
    for question in ("Which colour is on top?", "How many colours are there?"):
        body = {
            "model": "smollm2-cache",
            "max_tokens": 4,
            "temperature": 0,
            "messages": [system, {"role": "user", "content": question}],
        }
        assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
    first, second = [r async for r in RequestRecord.objects.order_by("created_at")]
    assert first.cached_tokens == 0  # nothing was cached yet
    assert 40 < second.cached_tokens < second.prompt_tokens  # the shared system message
    load = await scrape(client, "smollm2-cache")
    assert load["vllm:prefix_cache_queries_total"] == first.prompt_tokens + second.prompt_tokens
    assert load["vllm:prefix_cache_hits_total"] == second.cached_tokens
