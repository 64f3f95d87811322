"""Deployments on a real cluster: reconcile-mode workers converge live on what the database asks.

Every worker here starts without --models. Each test gives its workers a placement label of its
own and its models that label, so the placement of one test never reaches another's workers,
and stops its workers when it ends. The echo engine serves where the model does not matter;
SmolLM2 shows the load on demand and the memory an unload returns.
"""

from __future__ import annotations

import signal
import threading

import httpx
import openai
import psutil
import pytest

from .cluster import Cluster, Proc

pytestmark = [pytest.mark.distributed, pytest.mark.live]

RECONCILE_SECONDS = 1
WORKER_DEAD_AFTER_SECONDS = 3
SETTLE_TIMEOUT = 60  # how long a worker may take to converge before a test gives up (never a pass condition)
LONG_PROMPT = " ".join(f"w{i}" for i in range(2000))  # echoed at 5 ms a token: a request of several seconds


class DeploymentCluster(Cluster):
    """Every process reconciles every second and counts a worker dead after 3 s of silence."""

    def env(self, **extra) -> dict:
        # A job that waits for nobody fails in 30 s rather than the default 5 minutes.
        settings = {
            "RECONCILE_SECONDS": str(RECONCILE_SECONDS),
            "LOAD_TIMEOUT_SECONDS": "60",
            "QUEUE_TIMEOUT_SECONDS": "30",
        }
        return super().env(**{**settings, **extra})


@pytest.fixture(scope="module")
def deployments(tmp_path_factory):
    cluster = DeploymentCluster(tmp=tmp_path_factory.mktemp("deployments"))
    cluster.start_redis()
    cluster.create_database()
    try:
        cluster.api_key = cluster.manage("issue_api_key", "deployments").strip()
        cluster.base_url = cluster.start_web()
        yield cluster
    finally:
        cluster.shutdown()
        cluster.drop_database()


@pytest.fixture
def workers(deployments):
    """Start reconcile-mode workers for one test; they stop when it ends."""
    started: list[Proc] = []

    def start(name: str, labels: str, concurrency: int | None = None, **env: str) -> Proc:
        proc = deployments.start_worker(name, None, concurrency=concurrency, labels=labels, **env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def sdk(deployments):
    return openai.OpenAI(base_url=f"{deployments.base_url}/v1", api_key=deployments.api_key, max_retries=0, timeout=90)


def register(
    cluster: Cluster,
    name: str,
    *,
    label: str,
    engine: str = "echo",
    source: str = "",
    replicas: int = 1,
    keep_alive: str = "5m",
) -> None:
    """Register a model and its deployment as an operator would (manage.py register_model)."""
    options = ["--source", source] if source else ["--context-length", "4096", "--option", "token_delay_ms=5"]
    deployment = ["--placement-label", label, "--replicas", str(replicas), "--keep-alive", keep_alive]
    cluster.manage("register_model", name, "--engine", engine, *options, *deployment)


def ask(sdk: openai.OpenAI, model: str, content: str = "one two three") -> str:
    reply = sdk.chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}], max_tokens=8, temperature=0
    )
    assert reply.choices[0].message.content
    return reply.choices[0].message.content


def served_by(cluster: Cluster, completion_id: str) -> str:
    (row,) = cluster.query(
        "SELECT worker FROM monitoring_requestrecord WHERE request_id = %s", completion_id.removeprefix("chatcmpl-")
    )
    return row[0]


def listed_loaded(sdk: openai.OpenAI, model: str) -> bool:
    return next(m for m in sdk.models.list().data if m.id == model).model_extra["loaded"]


def hosted(cluster: Cluster, proc: Proc) -> list[str]:
    (row,) = cluster.query(
        "SELECT hosted_models FROM models_registry_workerregistration WHERE pid = %s", proc.process.pid
    )
    return row[0]


def test_a_model_registered_while_a_worker_runs_answers_without_a_restart(deployments, workers, sdk):
    worker = workers("fresh", "fresh")
    worker_id = deployments.worker_id(worker.process.pid)
    assert hosted(deployments, worker) == []  # ready at once, with no model
    # No engine to count slots from: the pool is sized for 4 models of 16 slots (MAX_LOADED_MODELS unset).
    assert deployments.worker_concurrency(worker.process.pid) == 64

    register(deployments, "late-echo", label="fresh")  # one replica: kept loaded
    reply = sdk.chat.completions.create(model="late-echo", messages=[{"role": "user", "content": "hello there"}])
    assert reply.choices[0].message.content == "hello there"
    assert served_by(deployments, reply.id) == worker_id
    assert deployments.ready_on("late-echo") == {worker_id}
    assert listed_loaded(sdk, "late-echo")
    assert worker.process.poll() is None  # the same process all along


def test_an_on_demand_model_loads_for_a_request_unloads_after_keep_alive_and_returns_its_memory(
    deployments, workers, sdk, gguf_path
):
    worker = workers("keeper", "keep")
    process = psutil.Process(worker.process.pid)
    register(
        deployments,
        "smol-ondemand",
        label="keep",
        engine="llama_cpp",
        source=gguf_path,
        replicas=0,
        keep_alive="3s",
    )
    assert deployments.copies("smol-ondemand") == [] and not listed_loaded(sdk, "smol-ondemand")
    before = process.memory_info().rss

    ask(sdk, "smol-ondemand", "Say hi")  # waits for the load
    loaded = process.memory_info().rss
    assert listed_loaded(sdk, "smol-ondemand")
    grown = loaded - before
    assert grown > 50 * 2**20, f"loading SmolLM2 grew the worker by only {grown} bytes"

    deployments.wait_until(
        lambda: deployments.copies("smol-ondemand") == [], SETTLE_TIMEOUT, "the keep-alive unload", worker
    )
    deployments.wait_until(lambda: "smol-ondemand" not in hosted(deployments, worker), SETTLE_TIMEOUT, "hosted", worker)
    unloaded = process.memory_info().rss
    assert loaded - unloaded > grown / 2, (before, loaded, unloaded)
    assert not listed_loaded(sdk, "smol-ondemand")

    ask(sdk, "smol-ondemand", "Say hi again")  # loads it again
    assert deployments.ready_on("smol-ondemand") == {deployments.worker_id(worker.process.pid)}


def test_one_model_at_a_time_swaps_between_two_on_demand_models(deployments, workers, sdk):
    worker = workers("single", "one", MAX_LOADED_MODELS="1")
    worker_id = deployments.worker_id(worker.process.pid)
    assert deployments.worker_concurrency(worker.process.pid) == 16  # one model's 16 slots
    for name in ("swap-a", "swap-b"):
        # Never idle out: only the eviction for the other model makes room.
        register(deployments, name, label="one", replicas=0, keep_alive="never")
    for turn, (name, other) in enumerate([("swap-a", "swap-b"), ("swap-b", "swap-a")] * 2):
        assert ask(sdk, name, f"turn {turn}") == f"turn {turn}"
        assert deployments.ready_on(name) == {worker_id}
        evicted = lambda other=other: deployments.copies(other) == []  # noqa: E731
        deployments.wait_until(evicted, SETTLE_TIMEOUT, f"{other} evicted", worker)
        assert hosted(deployments, worker) == [name]
    # The evicted model's queue is closed on the worker's consumer: its jobs wait for a worker that loads it.
    queues = deployments.consumed_queues(worker)
    assert "model.swap-b" in queues and "model.swap-a" not in queues, queues


def test_an_edit_rolls_the_reload_while_requests_keep_succeeding(deployments, workers, sdk):
    """Three clients send short requests without pause, and a long streamed one holds the first
    copy, while the context length is edited: the new copy is ready while the old one still
    drains the long request, which ends whole, and no request fails."""
    worker = workers("roller", "roll")
    register(deployments, "rolling", label="roll")
    deployments.wait_until(lambda: deployments.ready_on("rolling"), SETTLE_TIMEOUT, "the first copy", worker)
    ((_, _, first_revision),) = deployments.copies("rolling")

    results: list[int | str] = []
    long_answer: list[str] = []
    long_started = threading.Event()
    stop = threading.Event()

    def steady(client_number: int) -> None:
        with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {deployments.api_key}"}) as client:
            while not stop.is_set():
                body = {"model": "rolling", "messages": [{"role": "user", "content": f"client {client_number} a b c"}]}
                try:
                    response = client.post(f"{deployments.base_url}/v1/chat/completions", json=body)
                    results.append(response.status_code)
                except httpx.HTTPError as exc:
                    results.append(repr(exc))

    def long_request() -> None:
        chunks = sdk.chat.completions.create(
            model="rolling", stream=True, messages=[{"role": "user", "content": LONG_PROMPT}]
        )
        for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                long_answer.append(chunk.choices[0].delta.content)
                long_started.set()

    clients = [threading.Thread(target=steady, args=(n,)) for n in range(3)]
    long_client = threading.Thread(target=long_request)
    for client in clients:
        client.start()
    try:
        deployments.wait_until(lambda: len(results) >= 10, SETTLE_TIMEOUT, "requests before the edit")
        long_client.start()
        assert long_started.wait(SETTLE_TIMEOUT), "the long request never started"
        deployments.set_model("rolling", context_length=8192)

        def states() -> dict[str, str]:
            return {revision: state for _, state, revision in deployments.copies("rolling")}

        new_ready = lambda: any(r != first_revision and s == "ready" for r, s in states().items())  # noqa: E731
        deployments.wait_until(new_ready, SETTLE_TIMEOUT, "the new copy", worker)
        # The old copy still serves the long request it had: it drains, it was not cut off.
        assert states()[first_revision] == "draining" and long_client.is_alive()
        long_client.join(SETTLE_TIMEOUT)
        assert "".join(long_answer) == LONG_PROMPT
        only_new = lambda: first_revision not in states()  # noqa: E731
        deployments.wait_until(only_new, SETTLE_TIMEOUT, "the old copy unloaded", worker)
        after = len(results)
        deployments.wait_until(lambda: len(results) >= after + 10, SETTLE_TIMEOUT, "requests after the reload")
    finally:
        stop.set()
        for client in clients:
            client.join()
    failures = [r for r in results if r != 200]
    assert not failures, f"{len(failures)} of {len(results)} requests failed: {failures[:5]}"
    assert list(states().values()) == ["ready"]


def health(cluster: Cluster) -> tuple[int, str]:
    response = httpx.get(f"{cluster.base_url}/health", timeout=10)
    return response.status_code, response.json().get("reason", "")


def test_a_placement_no_worker_matches_is_a_503_with_retry_after(deployments, workers, sdk):
    plain = workers("plain", "plain")
    register(deployments, "needs-gpu", label="gpu-x", replicas=0)
    with pytest.raises(openai.APIStatusError) as caught:
        ask(sdk, "needs-gpu")
    assert caught.value.status_code == 503
    assert int(caught.value.response.headers["Retry-After"]) >= 1
    message = caught.value.message
    assert "needs-gpu" in message and "gpu-x" in message, message
    assert deployments.copies("needs-gpu") == []

    # Every enabled model here asks for a label this worker lacks (the other tests' workers are
    # gone): not ready. A model it may load, even one not loaded yet, makes it ready.
    deployments.wait_until(lambda: health(deployments)[0] == 503, SETTLE_TIMEOUT, "/health 503", plain)
    assert "no live worker hosts an enabled model or may load one" in health(deployments)[1]
    register(deployments, "plain-echo", label="plain", replicas=0)
    deployments.wait_until(lambda: health(deployments) == (200, "ready"), SETTLE_TIMEOUT, "/health 200", plain)
    assert deployments.copies("plain-echo") == []


def test_a_job_queued_when_its_copy_is_unloaded_loads_it_again(deployments, workers, sdk):
    """One pool thread: a second request waits in Redis behind a long one. The admin unloads the
    model meanwhile: the long one finishes on the draining copy, and the waiting one, whose copy
    is gone, asks for the model again instead of waiting out QUEUE_TIMEOUT_SECONDS for nobody."""
    worker = workers("lonely", "lonely", concurrency=1)
    register(deployments, "unloaded", label="lonely", replicas=0)
    assert ask(sdk, "unloaded", "warm up") == "warm up"
    loaded_at = (
        "SELECT r.state_changed_at FROM models_registry_replica r JOIN models_registry_servedmodel m "
        "ON m.id = r.model_id WHERE m.name = 'unloaded' AND r.state = 'ready'"
    )
    ((first_ready,),) = deployments.query(loaded_at)

    answers: dict[str, str] = {}
    long_started = threading.Event()

    def long_request() -> None:
        chunks = sdk.chat.completions.create(
            model="unloaded", stream=True, messages=[{"role": "user", "content": LONG_PROMPT}]
        )
        text = []
        for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                text.append(chunk.choices[0].delta.content)
                long_started.set()
        answers["long"] = "".join(text)

    def queued_request() -> None:
        answers["queued"] = ask(sdk, "unloaded", "still wanted")

    long_client = threading.Thread(target=long_request)
    long_client.start()
    assert long_started.wait(SETTLE_TIMEOUT), "the long request never started"
    queued_client = threading.Thread(target=queued_request)
    queued_client.start()
    deployments.wait_until(lambda: queue_length(deployments, "unloaded") == 1, SETTLE_TIMEOUT, "the queued job")
    unload(deployments, "unloaded")
    long_client.join(SETTLE_TIMEOUT)
    queued_client.join(2 * SETTLE_TIMEOUT)
    assert answers == {"long": LONG_PROMPT, "queued": "still wanted"}
    # The queued request was answered by a copy loaded again after the unload.
    ((again_ready,),) = deployments.query(loaded_at)
    assert again_ready > first_ready
    assert deployments.ready_on("unloaded") == {deployments.worker_id(worker.process.pid)}


def queue_length(cluster: Cluster, model: str) -> int:
    import redis

    with redis.Redis(port=cluster.redis_port) as client:
        return client.llen(f"model.{model}")


def unload(cluster: Cluster, model: str) -> None:
    """The admin's unload action, through its service."""
    cluster.manage(
        "shell",
        "-c",
        "from models_registry.models import ServedModel as M; "
        "from models_registry.services.deployments import served_model_unload; "
        f"served_model_unload(model=M.objects.get(name={model!r}))",
    )


def drain(cluster: Cluster, worker_id: str, *, resume: bool = False) -> None:
    """The admin's drain (or resume) action, through its service."""
    action = "worker_resume" if resume else "worker_drain"
    cluster.manage(
        "shell",
        "-c",
        "from models_registry.models import WorkerRegistration as W; "
        f"from models_registry.services.deployments import {action}; "
        f"{action}(worker=W.objects.get(worker_id={worker_id!r}))",
    )


def test_drain_moves_copies_and_a_killed_worker_fails_its_clients_and_loses_its_copies(deployments, workers, sdk):
    first, second = workers("pair-1", "pair"), workers("pair-2", "pair")
    ids = {proc.name: deployments.worker_id(proc.process.pid) for proc in (first, second)}
    register(deployments, "moving", label="pair")
    deployments.wait_until(lambda: deployments.ready_on("moving"), SETTLE_TIMEOUT, "the first copy")
    (holder_id,) = deployments.ready_on("moving")
    holder, other = (first, second) if ids[first.name] == holder_id else (second, first)

    drain(deployments, ids[holder.name])
    deployments.wait_until(
        lambda: deployments.ready_on("moving") == {ids[other.name]}, SETTLE_TIMEOUT, "the move", other
    )
    deployments.wait_until(
        lambda: [(worker, state) for worker, state, _ in deployments.copies("moving")] == [(ids[other.name], "ready")],
        SETTLE_TIMEOUT,
        "the drained worker's copy gone",
        holder,
    )
    reply = sdk.chat.completions.create(model="moving", messages=[{"role": "user", "content": "after the drain"}])
    assert served_by(deployments, reply.id) == ids[other.name]
    drain(deployments, ids[holder.name], resume=True)
    deployments.wait_until(
        lambda: deployments.worker_state(holder.process.pid) == "ready", SETTLE_TIMEOUT, "the resume", holder
    )

    # SIGKILL the worker that now holds the copy, in the middle of a long streamed answer.
    errors: list[openai.APIError] = []
    streamed = threading.Event()

    def stream() -> None:
        try:
            chunks = sdk.chat.completions.create(
                model="moving",
                stream=True,
                messages=[{"role": "user", "content": LONG_PROMPT}],
            )
            for chunk in chunks:
                if chunk.choices and chunk.choices[0].delta.content:
                    streamed.set()
        except openai.APIError as exc:
            errors.append(exc)

    client = threading.Thread(target=stream)
    client.start()
    assert streamed.wait(SETTLE_TIMEOUT), "the stream never started"
    other.stop(signal.SIGKILL)
    client.join(SETTLE_TIMEOUT)
    assert not client.is_alive(), "the client of the killed worker never got an answer"
    assert errors and "stopped while running this request" in str(errors[0]), errors
    lost = "SELECT worker FROM monitoring_requestrecord WHERE error_type = 'worker_lost'"
    deployments.wait_until(lambda: deployments.query(lost), SETTLE_TIMEOUT, "the failed request's record")
    assert deployments.query(lost) == [(ids[other.name],)]

    deployments.wait_until(
        lambda: deployments.ready_on("moving") == {ids[holder.name]}, SETTLE_TIMEOUT, "rescheduling", holder
    )
    reply = sdk.chat.completions.create(model="moving", messages=[{"role": "user", "content": "after the kill"}])
    assert reply.choices[0].message.content == "after the kill"
    assert served_by(deployments, reply.id) == ids[holder.name]
