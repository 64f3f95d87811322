"""Embeddings count in /metrics like any model request; tokenizer requests run no model and count
nowhere there, though their records and the dashboard's endpoint grouping show them."""

import pytest
from asgiref.sync import sync_to_async

from models_registry.services.served_models import served_model_register
from monitoring.dashboard import request_dashboard
from monitoring.models import RequestRecord
from tests.monitoring.test_metrics import ECHO, fresh_engine_host, scrape, value  # noqa: F401 (an autouse fixture)

pytestmark = pytest.mark.django_db(transaction=True)


async def test_embeddings_count_and_tokenizer_requests_do_not(client, echo_model):
    await sync_to_async(served_model_register)(name="echo-embed", source="", engine="echo", task="embed")
    await client.post("/v1/chat/completions", json={**ECHO, "max_tokens": 2})
    embedded = await client.post("/v1/embeddings", json={"model": "echo-embed", "input": ["a b", "c"]})
    assert embedded.status_code == 200
    for _ in range(2):
        tokens = (await client.post("/tokenize", json={"model": "echo", "prompt": "one two three"})).json()["tokens"]
        assert (await client.post("/detokenize", json={"model": "echo", "tokens": tokens})).status_code == 200

    samples = await scrape(client)
    assert value(samples, "vllm:prompt_tokens_total", model_name="echo-embed") == 3
    assert value(samples, "vllm:request_success_total", model_name="echo-embed", finished_reason="stop") == 1
    # echo served one chat completion and four tokenizer requests: only the completion counts.
    assert value(samples, "vllm:request_success_total", model_name="echo", finished_reason="length") == 1
    assert value(samples, "vllm:request_success_total", model_name="echo", finished_reason="stop") == 0
    assert value(samples, "vllm:e2e_request_latency_seconds_count", model_name="echo") == 1
    assert value(samples, "vllm:prompt_tokens_total", model_name="echo") == 6

    endpoints = sorted([r.endpoint async for r in RequestRecord.objects.all()])
    assert endpoints == ["chat.completions", "detokenize", "detokenize", "embeddings", "tokenize", "tokenize"]
    dashboard = await sync_to_async(request_dashboard)(window="hour", group_by="endpoint")
    assert dashboard.totals == {"chat.completions": 1, "embeddings": 1, "tokenize": 2, "detokenize": 2}
