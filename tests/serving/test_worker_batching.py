"""The worker coalesces chunks: fast tokens travel in few channel messages.

A real WorkerRuntime (started and stopped as the Celery bootstep does) serves one job on
the echo engine with no token delay, and sends its replies through channels-redis on the
real Redis, under a prefix of this test's own. Each send is a Redis round trip, far slower
than the engine's next token, so the runtime must batch what piles up meanwhile.
"""

import asyncio
import time
import uuid

import pytest
from asgiref.sync import async_to_sync
from channels_redis.core import RedisChannelLayer

from engines.base import GenerationRequest, SamplingParams
from models_registry.services.served_models import served_model_register
from monitoring.host_samples import process_sampler, start_process_sampler
from monitoring.models import RequestRecord
from serving import protocol
from serving.lifecycle import RequestLifecycle
from serving.route import model_spec
from serving.worker.runtime import WorkerRuntime

REDIS_URL = "redis://127.0.0.1:6379/0"
TOKENS = 400


@pytest.fixture
def redis_channel_layer(settings):
    """channels-redis on the real Redis, under a prefix no other test or process uses.

    The runtime gets the configured layer; the test reads replies through a layer of its own,
    as a web process would.
    """
    # capacity as in settings: a batch per token must fail the assert below, not overflow the channel.
    config = {"hosts": [REDIS_URL], "prefix": f"test-batching-{uuid.uuid4().hex}", "capacity": 1000}
    settings.REDIS_URL = REDIS_URL  # the runtime's liveness key goes here too
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": config}}
    web_layer = RedisChannelLayer(**config)
    yield web_layer
    async_to_sync(web_layer.flush)()  # deletes this prefix's keys


@pytest.fixture
def runtime(transactional_db, redis_channel_layer):
    """A started worker runtime hosting an echo model that yields tokens as fast as it can."""
    sampling = process_sampler().running  # the runtime's stop() stops this process's sampler
    model = served_model_register(name="echo", source="", engine="echo", context_length=4096)
    runtime = WorkerRuntime(models=[model])
    runtime.load()
    runtime.start(concurrency=1)
    yield runtime
    runtime.stop()
    runtime.loop.close()  # channels-redis closes its pools on that loop here, not at garbage collection
    if sampling:
        start_process_sampler(role="web")


async def replies(layer, channel: str) -> list[dict]:
    """Every message on `channel` up to the one that carries the finish reason (or an error)."""
    received = []
    async with asyncio.timeout(60):  # the job has ended: everything is already in Redis
        while True:
            message = await layer.receive(channel)
            received.append(message)
            if message["type"] == protocol.JOB_ERROR:
                return received
            if message["type"] == protocol.JOB_CHUNKS and any("finish" in c for c in message["chunks"]):
                return received


def test_fast_tokens_are_sent_in_batches(runtime, redis_channel_layer):
    model = runtime.models[0]
    prompt = " ".join(f"t{i}" for i in range(TOKENS))
    request = GenerationRequest(request_id=uuid.uuid4().hex, sampling=SamplingParams(max_tokens=1000), prompt=prompt)
    life = RequestLifecycle(endpoint="completions", api_key_id=None, request_id=request.request_id)
    life.model_name, life.engine, life.stream = model.name, "echo", True
    reply = async_to_sync(redis_channel_layer.new_channel)()
    runtime.run_job(
        protocol.job_message(
            engine="echo",
            spec=model_spec(model),
            request=request,
            reply_channel=reply,
            submitted_at=time.time(),
            record=life.job_record(),
        )
    )

    started, *batches = async_to_sync(replies)(redis_channel_layer, reply)
    assert started["type"] == protocol.JOB_STARTED and started["worker"] == runtime.worker_id
    assert {m["type"] for m in batches} == {protocol.JOB_CHUNKS}
    chunks = [protocol.chunk_from_dict(c) for m in batches for c in m["chunks"]]
    assert "".join(c.text for c in chunks) == prompt  # every token, in order
    assert len([c for c in chunks if c.text]) == TOKENS
    assert chunks[-1].finish_reason == "stop" and chunks[-1].completion_tokens == TOKENS
    assert len(batches) < TOKENS, f"{len(batches)} messages for {TOKENS} tokens: chunks were not coalesced"

    # The worker wrote the record itself, as it does for every distributed job.
    record = RequestRecord.objects.get(request_id=request.request_id)
    assert (record.status_code, record.finish_reason, record.completion_tokens) == (200, "stop", TOKENS)
    assert (record.prompt_tokens, record.engine, record.worker) == (TOKENS, "echo", runtime.worker_id)
