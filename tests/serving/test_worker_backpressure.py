"""Backpressure inside a worker: a real WorkerRuntime hosting SmolLM2 (one slot, one waiting place)
refuses a third job with a busy error that carries Retry-After to the web process, records it once,
and its liveness key reports what runs, what waits and the KV cells held, for /metrics.
"""

import json
import threading
import time
import uuid

import pytest
import redis
from asgiref.sync import async_to_sync

from engines.base import GenerationRequest, SamplingParams
from engines.errors import EngineBusyError
from models_registry.services.served_models import served_model_register
from monitoring.host_samples import process_sampler, start_process_sampler
from monitoring.load import ModelLoad
from monitoring.models import RequestRecord
from serving import protocol
from serving.dispatch.distributed import worker_load
from serving.lifecycle import RequestLifecycle
from serving.protocol import liveness_key
from serving.route import model_spec
from serving.worker.runtime import WorkerRuntime
from tests.serving.test_worker_batching import REDIS_URL, redis_channel_layer, replies  # noqa: F401 (fixture)

pytestmark = pytest.mark.model

MODEL = "smollm2-worker"


@pytest.fixture
def runtime(transactional_db, redis_channel_layer, gguf_path):  # noqa: F811
    sampling = process_sampler().running  # the runtime's stop() stops this process's sampler
    model = served_model_register(
        name=MODEL,
        source=gguf_path,
        engine="llama_cpp",
        context_length=1024,
        engine_options={"parallel": 1, "max_waiting": 1},
    )
    runtime = WorkerRuntime(models=[model])
    runtime.load()
    runtime.start(concurrency=3)  # more than the slot: the third job waits in the engine's queue
    yield runtime
    runtime.stop()
    runtime.loop.close()
    if sampling:
        start_process_sampler(role="web")


def job(runtime, layer, *, tenant: str, max_tokens: int) -> tuple[dict, str]:
    """A counting job (SmolLM2 counts far past any max_tokens here), and its reply channel."""
    model = runtime.models[0]
    request = GenerationRequest(
        request_id=uuid.uuid4().hex,
        prompt="1, 2, 3, 4,",
        tenant=tenant,
        sampling=SamplingParams(max_tokens=max_tokens, temperature=0.0),
    )
    life = RequestLifecycle(endpoint="completions", api_key_id=None, request_id=request.request_id)
    life.model_name, life.engine, life.stream = MODEL, "llama_cpp", True
    reply = async_to_sync(layer.new_channel)()
    message = protocol.job_message(
        engine="llama_cpp",
        spec=model_spec(model),
        request=request,
        reply_channel=reply,
        submitted_at=time.time(),
        record=life.job_record(),
    )
    return message, reply


def wait_for(condition, what: str):
    """Poll until `condition` holds; bounded by iterations, asserting nothing about time."""
    for _ in range(6000):
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


def test_a_full_queue_in_a_worker_refuses_with_retry_after_and_reports_its_load(runtime, redis_channel_layer):  # noqa: F811
    long_job, _ = job(runtime, redis_channel_layer, tenant="1", max_tokens=1000)
    short_job, short_reply = job(runtime, redis_channel_layer, tenant="2", max_tokens=4)
    assert protocol.job_from_message(long_job)[2].tenant == "1"  # the key travels with the job
    threads = [threading.Thread(target=runtime.run_job, args=(message,)) for message in (long_job, short_job)]
    threads[0].start()
    wait_for(lambda: runtime.load_report()["running"] == {MODEL: 1}, "the long job running")
    threads[1].start()
    wait_for(lambda: runtime.load_report()["waiting"] == {MODEL: 1}, "the short job waiting")

    runtime._run(runtime._beat())
    beat = redis.Redis.from_url(REDIS_URL).get(liveness_key(runtime.worker_id))
    load = worker_load(json.loads(beat))[MODEL]
    assert (load.running, load.waiting, load.kv_cache_capacity) == (1, 1, 1024)
    assert 0 < load.kv_cache_usage < 1
    assert (load + ModelLoad(waiting=3)).waiting == 4  # the web process adds the Redis queue's jobs

    refused_job, refused_reply = job(runtime, redis_channel_layer, tenant="3", max_tokens=4)
    runtime.run_job(refused_job)  # returns at once: nothing waits for a slot
    started, error = async_to_sync(replies)(redis_channel_layer, refused_reply)
    assert (started["type"], error["type"]) == (protocol.JOB_STARTED, protocol.JOB_ERROR)
    busy = protocol.error_from_dict(error["error"])
    assert isinstance(busy, EngineBusyError) and busy.retry_after >= 1
    record = RequestRecord.objects.get(request_id=refused_job["request_id"])
    assert (record.status_code, record.error_type, record.worker) == (429, "model_busy", runtime.worker_id)

    runtime.loop.call_soon_threadsafe(runtime.jobs[long_job["request_id"]].cancel)  # its client left
    for thread in threads:
        thread.join(timeout=120)
    chunks = [
        protocol.chunk_from_dict(c)
        for m in async_to_sync(replies)(redis_channel_layer, short_reply)[1:]
        for c in m["chunks"]
    ]
    assert chunks[-1].finish_reason == "length" and chunks[-1].cached_tokens is not None
    statuses = dict(RequestRecord.objects.values_list("request_id", "status_code"))
    assert statuses == {long_job["request_id"]: 499, short_job["request_id"]: 200, refused_job["request_id"]: 429}
    assert RequestRecord.objects.get(request_id=short_job["request_id"]).cached_tokens is not None
    assert runtime.load_report() == {"running": {}, "waiting": {}, "kv_cache": {MODEL: (0, 1024)}}
