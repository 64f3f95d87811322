"""The worker coalesces chunks: fast tokens travel in few channel messages."""

import asyncio

from api.dispatch import wire
from api.services.tracking import RequestTracker
from api.worker.runtime import WorkerRuntime
from engines.base import GenerationRequest, ModelSpec, SamplingParams


async def test_fast_tokens_are_sent_in_batches():
    runtime = WorkerRuntime(models=[], concurrency=1)
    spec = ModelSpec(name="echo", source="", context_length=4096)
    request = GenerationRequest(request_id="batch", sampling=SamplingParams(max_tokens=1000),
                                prompt=" ".join(f"t{i}" for i in range(400)))
    tracker = RequestTracker(endpoint="completions", api_key_id=None, request_id="batch")
    tracker.recorded_by_worker = True  # nothing to write to the database in this test
    sent: list[dict] = []

    async def slow_send(message):
        sent.append(message)
        await asyncio.sleep(0.005)  # a Redis round trip, roughly

    await runtime._stream("echo", spec, request, tracker, slow_send)
    chunks = [wire.chunk_from_dict(c) for m in sent for c in m["chunks"]]
    assert "".join(c.text for c in chunks) == request.prompt
    assert chunks[-1].finish_reason == "stop" and chunks[-1].completion_tokens == 400
    assert len(sent) < 100, f"{len(sent)} messages for 400 tokens: chunks were not coalesced"
    assert tracker.completion_tokens == 400
    runtime.host.shutdown()
    runtime.loop.close()
