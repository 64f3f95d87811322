"""The admission queue in front of an engine's slots: bounded, fair across tenants, and it lets go of
clients that leave. The queue itself on asyncio, then the llama.cpp engine on SmolLM2 behind it.

Nothing here times anything: tests hold requests until they let them go and read the order of admission.
"""

import asyncio
from contextlib import aclosing

import pytest

from engines.admission import DEFAULT_MAX_WAITING, MAX_RETRY_AFTER_SECONDS, AdmissionQueue, max_waiting_option
from engines.base import GenerationRequest, ModelSpec, SamplingParams
from engines.errors import EngineBusyError, EngineUnavailableError
from engines.llama_cpp import LlamaCppEngine
from tests.engines.helpers import GREEDY, loaded


class Held:
    """Requests that take their place in a queue and hold their slot until let go; `admitted`
    lists them in the order the queue let them in."""

    def __init__(self, queue: AdmissionQueue):
        self.queue = queue
        self.admitted: list[str] = []
        self._release: dict[str, asyncio.Event] = {}
        self.tasks: dict[str, asyncio.Task] = {}

    async def send(self, name: str, tenant: str, need: int = 1) -> None:
        """Start a request; returns once it is running or waiting (or refused)."""
        self._release[name] = asyncio.Event()
        self.tasks[name] = asyncio.create_task(self._hold(name, tenant, need))
        for _ in range(3):  # its task runs up to its first real wait
            await asyncio.sleep(0)

    async def _hold(self, name: str, tenant: str, need: int) -> None:
        async with self.queue.admitted(tenant=tenant, need=need):
            self.admitted.append(name)
            await self._release[name].wait()

    async def finish(self, name: str) -> None:
        self._release[name].set()
        await self.tasks[name]
        for _ in range(3):
            await asyncio.sleep(0)


async def test_a_freed_slot_goes_to_the_key_that_got_none_before_a_bursts_next_request():
    queue = AdmissionQueue(slots=1, max_waiting=8)
    held = Held(queue)
    for name in ("a1", "a2", "a3", "a4"):
        await held.send(name, "key-a")
    await held.send("b1", "key-b")
    await held.send("c1", "key-c")
    assert held.admitted == ["a1"] and queue.waiting == 5
    assert queue.waiting_by_tenant() == {"key-a": 3, "key-b": 1, "key-c": 1}
    for name in ("a1", "b1", "c1", "a2", "a3"):
        await held.finish(name)
    assert held.admitted == ["a1", "b1", "c1", "a2", "a3", "a4"]
    await held.finish("a4")
    assert queue.stats() == {
        "num_requests_running": 0,
        "num_requests_waiting": 0,
        "slots": 1,
        "slots_in_use": 0,
        "max_waiting": 8,
        "refused": 0,
    }


async def test_the_key_running_fewer_requests_is_served_first():
    queue = AdmissionQueue(slots=3, max_waiting=8)
    held = Held(queue)
    for name in ("a1", "a2", "b1"):
        await held.send(name, "key-a" if name.startswith("a") else "key-b")
    await held.send("a3", "key-a")
    await held.send("b2", "key-b")
    # a3 waited first and key-b was admitted last, but key-a still runs two and key-b none.
    await held.finish("b1")
    assert held.admitted == ["a1", "a2", "b1", "b2"]
    await held.finish("a1")
    assert held.admitted[-1] == "a3"
    for name in ("a2", "b2", "a3"):
        await held.finish(name)


async def test_past_max_waiting_a_request_is_refused_at_once_with_a_retry_after():
    queue = AdmissionQueue(slots=2, max_waiting=2, model="tight")
    held = Held(queue)
    for name in ("r1", "r2", "w1", "w2"):
        await held.send(name, "key-a")
    with pytest.raises(EngineBusyError) as refused:
        async with queue.admitted(tenant="key-a"):
            pass
    assert refused.value.retry_after >= 1
    assert "`tight`" in str(refused.value) and "max_waiting 2" in str(refused.value)
    assert (queue.running, queue.waiting, queue.refused) == (2, 2, 1)
    for name in ("r1", "r2", "w1", "w2"):
        await held.finish(name)
    assert held.admitted == ["r1", "r2", "w1", "w2"]


async def test_no_waiting_room_means_refusing_whenever_the_slots_are_taken():
    queue = AdmissionQueue(slots=1, max_waiting=0)
    held = Held(queue)
    await held.send("r1", "key-a")
    with pytest.raises(EngineBusyError):
        async with queue.admitted(tenant="key-b"):
            pass
    await held.finish("r1")
    await held.send("r2", "key-b")
    assert held.admitted == ["r1", "r2"]
    await held.finish("r2")


async def test_a_full_queue_gives_a_place_of_the_heaviest_key_to_a_key_with_none():
    """One key's burst cannot take the whole queue: its newest place goes to the newcomer."""
    queue = AdmissionQueue(slots=1, max_waiting=3)
    held = Held(queue)
    for name in ("a1", "a2", "a3", "a4"):
        await held.send(name, "key-a")
    await held.send("b1", "key-b")
    with pytest.raises(EngineBusyError) as pushed_out:
        await held.tasks["a4"]
    assert pushed_out.value.retry_after >= 1
    assert queue.waiting_by_tenant() == {"key-a": 2, "key-b": 1}
    # Key-b now holds one place, key-a two: one apart, so a second newcomer of key-b is refused.
    with pytest.raises(EngineBusyError):
        async with queue.admitted(tenant="key-b"):
            pass
    for name in ("a1", "b1", "a2", "a3"):
        await held.finish(name)
    assert held.admitted == ["a1", "b1", "a2", "a3"]


async def test_a_waiter_whose_client_leaves_gives_its_place_back():
    queue = AdmissionQueue(slots=1, max_waiting=1)
    held = Held(queue)
    await held.send("r1", "key-a")
    await held.send("w1", "key-a")
    held.tasks["w1"].cancel()
    with pytest.raises(asyncio.CancelledError):
        await held.tasks["w1"]
    assert (queue.running, queue.waiting) == (1, 0)
    await held.send("w2", "key-a")  # the place is free again
    assert queue.waiting == 1
    await held.finish("r1")
    await held.finish("w2")
    assert held.admitted == ["r1", "w2"] and queue.slots_in_use == 0


async def test_a_waiter_granted_its_slot_just_as_its_client_leaves_passes_the_slot_on():
    queue = AdmissionQueue(slots=1, max_waiting=2)
    held = Held(queue)
    let_go = asyncio.Event()

    async def first():
        async with queue.admitted(tenant="key-a"):
            await let_go.wait()
        held.tasks["w1"].cancel()  # w1 was just granted the slot, and its task has not run since

    running = asyncio.create_task(first())
    await held.send("w1", "key-a")
    await held.send("w2", "key-a")
    let_go.set()
    await running
    with pytest.raises(asyncio.CancelledError):
        await held.tasks["w1"]
    for _ in range(3):
        await asyncio.sleep(0)
    assert held.admitted == ["w2"] and queue.slots_in_use == 1
    await held.finish("w2")
    assert (queue.running, queue.waiting, queue.slots_in_use) == (0, 0, 0)


async def test_a_request_for_more_choices_than_free_slots_waits_for_them_and_is_not_overtaken():
    queue = AdmissionQueue(slots=4, max_waiting=4)
    held = Held(queue)
    await held.send("r1", "key-a", need=3)
    await held.send("n3", "key-b", need=3)  # needs three; one is free
    await held.send("small", "key-c", need=1)
    assert held.admitted == ["r1"]
    await held.finish("r1")
    assert held.admitted == ["r1", "n3", "small"]
    await held.send("all", "key-d", need=10)  # more choices than slots: takes all of them
    await held.finish("n3")
    await held.finish("small")
    assert held.admitted[-1] == "all" and queue.slots_in_use == 4
    await held.finish("all")


def test_retry_after_is_the_queue_over_its_measured_drain_rate():
    now = [1000.0]
    queue = AdmissionQueue(slots=2, max_waiting=100, clock=lambda: now[0])
    assert queue.drain_rate() is None and queue.retry_after() == 1  # nothing waits
    queue._waiting_count = 10
    assert queue.retry_after() == 10  # nothing measured yet: one a second is assumed
    for _ in range(20):  # 20 requests finished over 10 s: 2 a second
        queue._take("t", 1)
        queue._release("t", 1)
        now[0] += 0.5
    assert queue.drain_rate() == pytest.approx(2.0)
    assert queue.retry_after() == 5
    queue._waiting_count = 1
    assert queue.retry_after() == 1  # never below a second
    queue._waiting_count = 1000
    assert queue.retry_after() == MAX_RETRY_AFTER_SECONDS
    now[0] += 61  # the window forgot them
    assert queue.drain_rate() is None


def test_max_waiting_option():
    assert max_waiting_option({}, "m") == DEFAULT_MAX_WAITING
    assert max_waiting_option({"max_waiting": 0}, "m") == 0
    for bad in (-1, "4", 2.5, True):
        with pytest.raises(EngineUnavailableError, match="max_waiting of model `m`"):
            max_waiting_option({"max_waiting": bad}, "m")


# --- the llama.cpp engine behind its queue, on SmolLM2 ---------------------------------------


def counting(tenant: str, *, max_tokens: int = 1000) -> GenerationRequest:
    """A raw prompt SmolLM2 continues by counting for far longer than any test waits."""
    return GenerationRequest(
        request_id=tenant,
        prompt="1, 2, 3, 4,",
        tenant=tenant,
        sampling=SamplingParams(**{**GREEDY, "max_tokens": max_tokens}),
    )


async def wait_for(condition, what: str):
    """Poll a condition; bounded by iterations, asserting nothing about time."""
    for _ in range(6000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


@pytest.mark.model
async def test_the_llama_engine_queues_past_its_slots_refuses_past_max_waiting_and_forgets_who_left(gguf_path):
    spec = ModelSpec(
        name="smollm2-one-slot", source=gguf_path, context_length=1024, options={"parallel": 1, "max_waiting": 1}
    )
    with loaded(LlamaCppEngine(spec)) as engine:
        assert engine.slots == 1
        running = engine.generate(counting("a"))
        assert (await anext(running)).token_ids

        async def drain(request):
            async with aclosing(engine.generate(request)) as chunks:
                return [chunk async for chunk in chunks]

        waiter = asyncio.create_task(drain(counting("b", max_tokens=4)))
        await wait_for(lambda: engine.admission.waiting == 1, "the second request waiting")
        assert engine._scheduler.stats()["waiting"] == 0  # the scheduler only sees admitted work
        with pytest.raises(EngineBusyError) as refused:
            await drain(counting("c"))
        assert refused.value.retry_after >= 1
        state = engine.state()
        assert (state["num_requests_running"], state["num_requests_waiting"], state["refused"]) == (1, 1, 1)
        assert 0 < state["kv_cache_tokens"] <= state["kv_cache_capacity"] == 1024

        waiter.cancel()  # its client left
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert engine.admission.waiting == 0
        replacement = asyncio.create_task(drain(counting("d", max_tokens=4)))
        await wait_for(lambda: engine.admission.waiting == 1, "the newcomer waiting in the freed place")

        await running.aclose()
        chunks = await replacement
        assert chunks[-1].finish_reason == "length" and chunks[-1].completion_tokens == 4
        await wait_for(lambda: engine._scheduler.stats()["running"] == 0, "the scheduler idle")
        state = engine.state()
        assert (state["num_requests_running"], state["num_requests_waiting"], state["kv_cache_tokens"]) == (0, 0, 0)
        assert engine.in_flight == 0
