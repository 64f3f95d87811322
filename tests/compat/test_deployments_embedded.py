"""Deployments in embedded mode (./run.sh), on the real SmolLM2 model with the openai SDK: load on demand,
keep-alive unload with its memory returned, swapping under MAX_LOADED_MODELS=1, and a rolling reload on
an edit while requests keep coming."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from models_registry.bundled import bundled_model_path

from .live_server import manage_py, platform_env, start_live_server

pytestmark = [pytest.mark.live, pytest.mark.model]


def manage(tmp: Path, *args: str) -> str:
    """manage.py against the live server's database, as an operator's shell would run it."""
    return manage_py(platform_env(DATABASE_URL=f"sqlite:///{tmp / 'live.sqlite3'}"), *args)


def register_smollm2(tmp: Path, name: str, *extra: str) -> None:
    manage(tmp, "register_model", name, "--source", str(bundled_model_path()), "--engine", "llama_cpp", *extra)


def engines(server) -> dict[str, dict]:
    status = httpx.get(
        f"{server.base_url}/v1/system/status", headers={"Authorization": f"Bearer {server.api_key}"}, timeout=30
    )
    assert status.status_code == 200, status.text
    return {engine["model"]: engine for engine in status.json()["engines"]}


def wait_for(predicate, what: str, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting until {what}")


def sdk(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=server.api_key, max_retries=0, timeout=120)


def ask(client: openai.OpenAI, model: str) -> str:
    answer = client.chat.completions.create(
        model=model, max_tokens=4, temperature=0, messages=[{"role": "user", "content": "Say hi"}]
    )
    assert answer.choices[0].finish_reason in ("stop", "length")
    return answer.choices[0].message.content or ""


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deployments")
    server = start_live_server(tmp, extra_env={"RECONCILE_SECONDS": "0.5"})
    yield tmp, server
    server.stop()


def test_on_demand_loads_for_a_request_then_unloads_after_keep_alive_returning_memory(live):
    tmp, server = live
    register_smollm2(tmp, "smol-lazy", "--replicas", "0", "--keep-alive", "2s", "--context-length", "512")
    assert "smol-lazy" not in engines(server)
    client = sdk(server)
    ask(client, "smol-lazy")
    assert "smol-lazy" in engines(server)
    loaded_rss = psutil.Process(server.process.pid).memory_info().rss
    wait_for(lambda: "smol-lazy" not in engines(server), "smol-lazy unloads after its keep-alive")
    unloaded_rss = psutil.Process(server.process.pid).memory_info().rss
    # Its weights are unmapped and its KV cache freed: tens of MB at least.
    assert loaded_rss - unloaded_rss > 20 * 1024 * 1024, (loaded_rss, unloaded_rss)
    ask(client, "smol-lazy")  # the next request loads it again
    assert "smol-lazy" in engines(server)


def test_an_edit_reloads_rolling_while_requests_keep_succeeding(live):
    tmp, server = live
    register_smollm2(tmp, "smol-edit", "--context-length", "512")
    wait_for(lambda: "smol-edit" in engines(server), "smol-edit loads (replicas 1)")
    failures: list[BaseException] = []
    answered = [0]
    stop = threading.Event()

    def steady_stream():
        client = sdk(server)
        while not stop.is_set():
            try:
                ask(client, "smol-edit")
                answered[0] += 1
            except BaseException as exc:
                failures.append(exc)

    streams = [threading.Thread(target=steady_stream) for _ in range(2)]
    for stream in streams:
        stream.start()
    try:
        wait_for(lambda: answered[0] >= 3, "the stream is flowing")
        register_smollm2(tmp, "smol-edit", "--context-length", "1024")
        wait_for(lambda: engines(server).get("smol-edit", {}).get("context_length") == 1024, "the reload")
        after = answered[0]
        wait_for(lambda: answered[0] >= after + 3, "requests on the new copy")
    finally:
        stop.set()
        for stream in streams:
            stream.join(timeout=120)
    assert failures == []


def test_with_room_for_one_model_two_on_demand_models_swap_in_turn(tmp_path):
    server = start_live_server(tmp_path, extra_env={"MAX_LOADED_MODELS": "1", "RECONCILE_SECONDS": "0.5"})
    try:
        # The bundled models go on demand too, so that one model at a time fits.
        for name in ("smollm2", "smollm2-embed"):
            manage(tmp_path, "register_model", name, "--source", str(bundled_model_path()), "--replicas", "0")
        register_smollm2(tmp_path, "left", "--replicas", "0", "--context-length", "512")
        register_smollm2(tmp_path, "right", "--replicas", "0", "--context-length", "512")
        client = sdk(server)
        for turn in range(4):
            model = ("left", "right")[turn % 2]
            ask(client, model)
            assert list(engines(server)) == [model]
        assert server.log().count("to make room for") >= 3
    finally:
        server.stop()
