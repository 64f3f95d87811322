"""A job that reaches a worker for a model it no longer holds goes back to its queue once, then is refused.

A real reconcile-mode WorkerRuntime holds no copy of the model (its placement names a label this
worker lacks), as a worker does right after closing a queue it had just taken a job from. The
first time, the job goes back to `model.<name>` on the broker untouched but marked, with no
reply and no record; the second time it is refused with a retryable error, recorded once.
"""

import json
import time
import uuid

import pytest
from asgiref.sync import async_to_sync
from celery import current_app

from engines.base import GenerationRequest, SamplingParams
from models_registry.models import ServedModel
from models_registry.services.served_models import served_model_register
from monitoring.host_samples import process_sampler, start_process_sampler
from monitoring.models import RequestRecord
from serving import protocol
from serving.lifecycle import RequestLifecycle
from serving.protocol import queue_name
from serving.route import model_spec
from serving.worker.jobs import REQUEUED
from serving.worker.runtime import WorkerRuntime
from tests.serving.test_worker_batching import redis_channel_layer, replies  # noqa: F401 (fixture)

MODEL = "placed-elsewhere"


@pytest.fixture
def runtime(transactional_db, redis_channel_layer):  # noqa: F811
    sampling = process_sampler().running  # the runtime's stop() stops this process's sampler
    model = served_model_register(name=MODEL, source="", engine="echo", context_length=4096)
    ServedModel.objects.filter(pk=model.pk).update(placement_label="elsewhere")
    runtime = WorkerRuntime(None)  # reconcile mode: it holds what placement gives it, here nothing
    runtime.load()
    runtime.start(concurrency=1)
    yield runtime
    runtime.stop()
    runtime.loop.close()
    if sampling:
        start_process_sampler(role="web")


def taken_from_queue(queue: str) -> dict:
    """The one job waiting in `queue` on the broker, taken off it."""
    with current_app.connection_for_read() as connection:
        waiting = connection.SimpleQueue(queue)
        try:
            message = waiting.get(timeout=10)
            message.ack()
        finally:
            waiting.close()
    (job,), _kwargs, _embed = message.decode()
    return job


def test_a_job_for_a_model_not_held_goes_back_once_then_is_refused(runtime, redis_channel_layer):  # noqa: F811
    model = ServedModel.objects.get(name=MODEL)
    assert not runtime.host.has(MODEL)
    request = GenerationRequest(request_id=uuid.uuid4().hex, sampling=SamplingParams(max_tokens=8), prompt="a b c")
    life = RequestLifecycle(endpoint="completions", api_key_id=None, request_id=request.request_id)
    life.model_name, life.engine, life.stream = MODEL, "echo", False
    reply = async_to_sync(redis_channel_layer.new_channel)()
    job = protocol.job_message(
        engine="echo",
        spec=model_spec(model),
        request=request,
        reply_channel=reply,
        submitted_at=time.time(),
        record=life.job_record(),
    )

    runtime.run_job(job)
    requeued = taken_from_queue(queue_name(MODEL))
    assert requeued == json.loads(json.dumps({**job, REQUEUED: True}))  # the same job (as JSON), its time kept
    assert not RequestRecord.objects.filter(request_id=request.request_id).exists()

    runtime.run_job(requeued)  # it came back to a worker without the model again
    (refused,) = async_to_sync(replies)(redis_channel_layer, reply)  # the first reply: nothing came before
    assert refused["type"] == protocol.JOB_ERROR
    error = protocol.error_from_dict(refused["error"])
    assert type(error).__name__ == "EngineUnavailableError" and MODEL in str(error)
    record = RequestRecord.objects.get(request_id=request.request_id)
    assert record.status_code == 503 and record.worker == runtime.worker_id
