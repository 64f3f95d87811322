"""Embeddings and the tokenizer endpoints in distributed mode: jobs run on a real Celery worker,
which writes their records."""

from __future__ import annotations

import httpx
import openai
import pytest

from .test_distributed import wait_for_records

pytestmark = [pytest.mark.distributed, pytest.mark.live, pytest.mark.model]

CHAT = [{"role": "user", "content": "Say hello to the sea."}]


@pytest.fixture(scope="module")
def deployment(cluster, gguf_path):
    """One worker hosting SmolLM2 twice: for generation, and mean-pooled for embeddings."""
    cluster.manage(
        "register_model",
        "smollm2-embed",
        "--source",
        gguf_path,
        "--engine",
        "llama_cpp",
        "--task",
        "embed",
        "--context-length",
        "512",
    )
    cluster.worker = cluster.start_worker("w1", "smollm2,smollm2-embed", concurrency=4)
    cluster.base_url = cluster.start_web()
    return cluster


@pytest.fixture(scope="module")
def sdk(deployment):
    return openai.OpenAI(base_url=f"{deployment.base_url}/v1", api_key=deployment.api_key, max_retries=0, timeout=60)


def post(deployment, path: str, body: dict) -> httpx.Response:
    return httpx.post(
        f"{deployment.base_url}{path}",
        json=body,
        headers={"Authorization": f"Bearer {deployment.api_key}"},
        timeout=60,
    )


def endpoint_records(deployment, endpoint: str, count: int) -> list[dict]:
    return wait_for_records(deployment, count, "WHERE endpoint = %s", endpoint)


def test_embeddings_come_from_the_worker(deployment, sdk):
    texts = ["The cat sleeps on the sofa.", "A kitten naps on the couch.", "Quarterly tax filing deadlines"]
    by_default = sdk.embeddings.create(model="smollm2-embed", input=texts)  # base64 on the wire
    as_floats = sdk.embeddings.create(model="smollm2-embed", input=texts, encoding_format="float")
    for packed, floats in zip(by_default.data, as_floats.data, strict=True):
        assert len(floats.embedding) == 576
        assert packed.embedding == pytest.approx(floats.embedding, abs=1e-6)
    cat, kitten, tax = (d.embedding for d in as_floats.data)
    assert sum(a * b for a, b in zip(cat, kitten)) > sum(a * b for a, b in zip(cat, tax))

    ids = post(deployment, "/tokenize", {"model": "smollm2-embed", "prompt": texts[0]}).json()["tokens"]
    by_ids = sdk.embeddings.create(model="smollm2-embed", input=[ids], encoding_format="float")
    assert by_ids.data[0].embedding == pytest.approx(as_floats.data[0].embedding, abs=1e-5)

    worker = deployment.worker_id(deployment.worker.process.pid)
    records = endpoint_records(deployment, "embeddings", 3)
    assert len(records) == 3  # one per request, written by the worker
    assert {(r["worker"], r["status_code"], r["model_name"], r["finish_reason"]) for r in records} == {
        (worker, 200, "smollm2-embed", "stop")
    }
    assert by_default.usage.prompt_tokens == as_floats.usage.prompt_tokens > 0

    with pytest.raises(openai.BadRequestError) as caught:
        sdk.embeddings.create(model="smollm2", input="sea")
    assert caught.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.embeddings.create(model="smollm2-embed", input=[[10**8]])
    assert caught.value.body["param"] == "input"  # refused by the worker's engine, in-band


def test_tokenize_and_detokenize_run_on_the_worker(deployment, sdk):
    counted = post(deployment, "/tokenize", {"model": "smollm2", "messages": CHAT})
    assert counted.status_code == 200, counted.text
    completion = sdk.chat.completions.create(model="smollm2", messages=CHAT, max_tokens=1)
    assert counted.json()["count"] == completion.usage.prompt_tokens == len(counted.json()["tokens"])

    text = "The sea, the sky."
    tokens = post(deployment, "/tokenize", {"model": "smollm2", "content": text}).json()["tokens"]
    assert post(deployment, "/detokenize", {"model": "smollm2", "tokens": tokens}).json() == {
        "prompt": text,
        "content": text,
    }
    worker = deployment.worker_id(deployment.worker.process.pid)
    tokenize = wait_for_records(deployment, 2, "WHERE endpoint = %s AND model_name = %s", "tokenize", "smollm2")
    (detokenize,) = endpoint_records(deployment, "detokenize", 1)
    assert {(r["worker"], r["status_code"]) for r in [*tokenize, detokenize]} == {(worker, 200)}
    bad = post(deployment, "/detokenize", {"model": "smollm2", "tokens": [10**8]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "tokens"
