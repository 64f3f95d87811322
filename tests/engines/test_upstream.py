"""The upstream engine against a real OpenAI-compatible server: llama-cpp-python's own."""

import asyncio
import itertools
import json
import time

import httpx
import pytest

from engines.base import GenerationRequest, ModelSpec, SamplingParams
from engines.errors import (
    ContextOverflowError,
    EngineCrashedError,
    EngineUnavailableError,
    UnsupportedParameterError,
)
from engines.openai_client import OpenAIProxy, _error_from_body
from engines.upstream import UpstreamEngine
from tests.engines.helpers import POEM, collect, loaded, text_of
from tests.engines.helpers import greedy_chat as chat
from tests.engines.helpers import greedy_completion as complete

from .openai_server import free_port, openai_server, replay_server

KEY = "upstream-test-key"
# Far more tokens than the 2048-token window: the upstream itself must refuse it.
TOO_LONG = ({"role": "user", "content": "hello " * 2500},)


@pytest.fixture(scope="module")
def server(gguf_path, tmp_path_factory):
    with openai_server(gguf_path, tmp_path_factory.mktemp("upstream") / "server.log", api_key=KEY) as running:
        yield running


def make_engine(server, gguf_path, **options) -> UpstreamEngine:
    spec = ModelSpec(
        name="smollm2",
        source=gguf_path,
        context_length=2048,
        options={"base_url": server.base_url, "api_key": KEY, **options},
    )
    return UpstreamEngine(spec)


@pytest.fixture(scope="module")
def engine(server, gguf_path):
    with loaded(make_engine(server, gguf_path)) as engine:
        yield engine


@pytest.fixture(scope="module")
def unstreamed(server, gguf_path):
    """The same upstream asked without streaming: llama_cpp.server reports usage only then."""
    with loaded(make_engine(server, gguf_path, stream=False)) as engine:
        yield engine


def direct(server, path: str, body: dict) -> dict:
    """The upstream's own non-streamed answer, asked without any of our code."""
    response = httpx.post(
        f"{server.base_url}{path}", json=body, timeout=60, trust_env=False, headers={"Authorization": f"Bearer {KEY}"}
    )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.model
async def test_chat_streams_deltas_as_the_upstream_makes_them(engine, server):
    arrivals, chunks = [], []
    async for chunk in engine.generate(chat()):
        arrivals.append(time.monotonic())
        chunks.append(chunk)
    deltas = [c for c in chunks if c.text]
    assert len(deltas) >= 8, chunks
    # A proxy that buffered the response would hand everything over within microseconds;
    # the upstream decodes one token every few milliseconds.
    gaps = [b - a for a, b in itertools.pairwise(arrivals[: len(deltas)])]
    assert sorted(gaps)[len(gaps) // 2] > 0.002, gaps
    assert chunks[-1].finish_reason == "length"
    own = direct(server, "/chat/completions", {"messages": list(POEM), "max_tokens": 16, "temperature": 0, "seed": 7})
    assert text_of(chunks) == own["choices"][0]["message"]["content"]


@pytest.mark.model
async def test_streamed_counts_stay_unknown_when_the_upstream_sends_no_usage(engine):
    """llama_cpp.server ignores stream_options.include_usage; counts must not be invented."""
    final = (await collect(engine, chat(max_tokens=4)))[-1]
    assert final.finish_reason == "length"
    assert (final.prompt_tokens, final.completion_tokens) == (None, None)


@pytest.mark.model
async def test_usage_counts_are_llama_cpp_own(unstreamed, server):
    chunks = await collect(unstreamed, chat(max_tokens=8))
    final = chunks[-1]
    own = direct(server, "/chat/completions", {"messages": list(POEM), "max_tokens": 8, "temperature": 0, "seed": 7})
    assert (final.prompt_tokens, final.completion_tokens) == (
        own["usage"]["prompt_tokens"],
        own["usage"]["completion_tokens"],
    )
    assert final.completion_tokens == 8 and final.finish_reason == "length"
    assert text_of(chunks) == own["choices"][0]["message"]["content"]


@pytest.mark.model
async def test_prompt_goes_to_completions(engine, server):
    prompt = "Once upon a time"
    chunks = await collect(engine, complete(prompt, max_tokens=8))
    own = direct(server, "/completions", {"prompt": prompt, "max_tokens": 8, "temperature": 0, "seed": 7})
    assert text_of(chunks) == own["choices"][0]["text"]
    assert chunks[-1].finish_reason == "length"


@pytest.mark.model
async def test_stop_sequence_is_forwarded(engine):
    full = text_of(await collect(engine, chat()))
    words = full.split()
    assert len(words) >= 3, full
    stop = " " + words[2]
    chunks = await collect(engine, chat(stop=(stop,)))
    assert text_of(chunks) == full[: full.index(stop)]
    assert chunks[-1].finish_reason == "stop"


@pytest.mark.model
async def test_max_tokens_is_forwarded(engine, unstreamed):
    full = text_of(await collect(engine, chat()))
    short = await collect(unstreamed, chat(max_tokens=3))
    assert short[-1].finish_reason == "length" and short[-1].completion_tokens == 3
    assert full.startswith(text_of(short)) and len(text_of(short)) < len(full)


@pytest.mark.model
async def test_seed_is_forwarded(engine):
    """At temperature 1 only a forwarded seed makes two runs agree; different seeds differ."""
    runs = {seed: text_of(await collect(engine, chat(temperature=1.0, seed=seed))) for seed in (1, 2, 3)}
    assert text_of(await collect(engine, chat(temperature=1.0, seed=1))) == runs[1]
    assert len(set(runs.values())) > 1, runs


def test_body_forwards_every_sampling_parameter():
    proxy = OpenAIProxy("http://127.0.0.1:9/v1", model="m")
    sampling = SamplingParams(
        max_tokens=5,
        temperature=0.3,
        top_p=0.9,
        stop=("\n", "END"),
        seed=11,
        presence_penalty=0.5,
        frequency_penalty=-0.25,
    )
    path, body = proxy.body(GenerationRequest(request_id="t", sampling=sampling, messages=POEM))
    assert path == "/chat/completions"
    assert body == {
        "model": "m",
        "messages": list(POEM),
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 5,
        "temperature": 0.3,
        "top_p": 0.9,
        "stop": ["\n", "END"],
        "seed": 11,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.25,
    }
    path, body = proxy.body(GenerationRequest(request_id="t", sampling=SamplingParams(), prompt="hi"))
    assert path == "/completions" and body["prompt"] == "hi"
    assert not {"max_tokens", "stop", "seed", "presence_penalty", "frequency_penalty"} & body.keys()


@pytest.mark.model
async def test_closing_the_stream_disconnects_the_upstream(engine, server):
    # At temperature 0 SmolLM2 counts on for hundreds of tokens (tens of seconds) unless stopped.
    stream = engine.generate(complete("1, 2, 3, 4, 5, 6, 7, 8, 9, 10,", max_tokens=1500))
    received = [await anext(stream), await anext(stream)]
    await stream.aclose()
    assert all(c.text for c in received)
    assert engine.in_flight == 0
    deadline = time.monotonic() + 10
    while "Disconnected from client" not in server.log() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert "Disconnected from client" in server.log()
    # llama_cpp.server decodes one request at a time: this finishes promptly only because
    # the abandoned one stopped.
    started = time.monotonic()
    after = await collect(engine, chat(max_tokens=4))
    assert after[-1].finish_reason == "length" and text_of(after)
    assert time.monotonic() - started < 10


def test_unreachable_base_url_is_unavailable_at_load(gguf_path):
    engine = UpstreamEngine(
        ModelSpec(name="nowhere", source=gguf_path, options={"base_url": f"http://127.0.0.1:{free_port()}/v1"})
    )
    with pytest.raises(EngineUnavailableError, match="unreachable"):
        engine.load()
    assert not engine.loaded


def test_missing_base_url_is_unavailable_at_load():
    with pytest.raises(EngineUnavailableError, match="base_url"):
        UpstreamEngine(ModelSpec(name="m", source="")).load()


@pytest.mark.model
def test_wrong_api_key_is_unavailable_at_load(server, gguf_path):
    with pytest.raises(EngineUnavailableError, match="API key") as caught:
        make_engine(server, gguf_path, api_key="not-the-key").load()
    assert "401" in str(caught.value) and "not-the-key" not in str(caught.value)


@pytest.mark.model
async def test_max_tokens_beyond_the_window_is_a_context_overflow(engine):
    # llama_cpp.server would quietly shrink 4096 to what fits; the platform's contract is an error.
    with pytest.raises(ContextOverflowError, match="2048"):
        await collect(engine, chat(max_tokens=4096))


@pytest.mark.model
async def test_upstream_context_error_maps_to_context_overflow(unstreamed):
    with pytest.raises(ContextOverflowError, match="maximum context length is 2048") as caught:
        await collect(unstreamed, chat(messages=TOO_LONG, max_tokens=8))
    assert caught.value.param == "messages"


@pytest.mark.model
async def test_stream_that_breaks_off_is_a_typed_error(engine):
    """llama_cpp.server fails a streamed oversize prompt after its 200 headers, sending nothing."""
    with pytest.raises(EngineCrashedError, match="without a finish reason"):
        await collect(engine, chat(messages=TOO_LONG, max_tokens=8))


@pytest.mark.model
async def test_upstream_server_error_keeps_its_message(engine):
    # llama_cpp.server answers its own validation failures with a 500.
    with pytest.raises(EngineCrashedError, match="top_p"):
        await collect(engine, chat(top_p=5.0))


@pytest.mark.model
async def test_request_with_a_refused_key_is_unavailable(server):
    proxy = OpenAIProxy(server.base_url, model="m", api_key="wrong")
    with pytest.raises(EngineUnavailableError, match="refused our API key"):
        [c async for c in proxy.stream(chat())]


@pytest.mark.parametrize(
    ("status", "body", "expected", "param"),
    [
        (
            400,
            {"error": {"message": "too long", "code": "context_length_exceeded", "param": "messages"}},
            ContextOverflowError,
            "messages",
        ),
        # vLLM's wording, without a code.
        (
            400,
            {
                "object": "error",
                "message": "This model's maximum context length is 2048 tokens. However, you requested 4100 tokens.",
                "type": "BadRequestError",
                "code": 400,
            },
            ContextOverflowError,
            "messages",
        ),
        (
            400,
            {"error": {"message": "logprobs is not supported", "param": "logprobs"}},
            UnsupportedParameterError,
            "logprobs",
        ),
        (422, {"detail": "unprocessable"}, UnsupportedParameterError, None),
        (401, {"error": {"message": "bad key"}}, EngineUnavailableError, None),
        (404, {"error": {"message": "The model `x` does not exist."}}, EngineUnavailableError, None),
        (429, {"error": {"message": "slow down"}}, EngineUnavailableError, None),
        (503, {"error": "overloaded"}, EngineCrashedError, None),
        # An in-band stream error (read as a 500 unless `code` carries the real status).
        (500, {"error": {"message": "prompt is too long", "code": 400}}, ContextOverflowError, "messages"),
    ],
)
def test_upstream_error_bodies_map_to_typed_errors(status, body, expected, param):
    error = _error_from_body(json.loads(json.dumps(body)), status, "http://upstream/v1")
    assert type(error) is expected
    assert error.param == param
    message = body.get("error", body)
    text = message if isinstance(message, str) else message.get("message") or message.get("detail")
    assert text in str(error)


def sse(*events) -> bytes:
    return b"".join(b"data: " + (e if isinstance(e, bytes) else json.dumps(e).encode()) + b"\n\n" for e in events)


def vllm_chunk(delta=None, finish=None, **extra) -> dict:
    """A chat.completion.chunk as vLLM streams it."""
    choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "qwen",
        "choices": choices,
        **extra,
    }


def replay_engine(server) -> UpstreamEngine:
    engine = UpstreamEngine(
        ModelSpec(name="qwen", source="qwen", context_length=2048, options={"base_url": server.base_url})
    )
    engine.load()
    return engine


async def test_counts_come_from_the_usage_chunk_after_the_finish():
    """vLLM's stream with include_usage: the usage arrives alone, after the finish reason."""
    answer = sse(
        vllm_chunk({"role": "assistant", "content": ""}),
        vllm_chunk({"content": "Hello"}),
        vllm_chunk({"content": " world"}, finish="length"),
        vllm_chunk(usage={"prompt_tokens": 12, "total_tokens": 14, "completion_tokens": 2}),
        b"[DONE]",
    )
    with replay_server(answer) as server:
        chunks = await collect(replay_engine(server), chat(max_tokens=2))
        sent = server.requests[0]
    assert [c.text for c in chunks[:-1]] == ["Hello", " world"]
    final = chunks[-1]
    assert (final.finish_reason, final.prompt_tokens, final.completion_tokens) == ("length", 12, 2)
    assert sent["model"] == "qwen" and sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}


async def test_a_loopback_upstream_bypasses_environment_proxies(monkeypatch):
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, dead_proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    answer = sse(vllm_chunk({"content": "hi"}, finish="stop"), b"[DONE]")
    with replay_server(answer) as server:
        chunks = await collect(replay_engine(server), chat())
    assert [c.text for c in chunks] == ["hi", ""] and chunks[-1].finish_reason == "stop"


async def test_an_error_inside_the_stream_is_typed():
    error = {
        "error": {
            "object": "error",
            "message": "This model's maximum context length is 2048 tokens.",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        }
    }
    with replay_server(sse(vllm_chunk({"role": "assistant"}), error)) as server:
        with pytest.raises(ContextOverflowError, match="maximum context length"):
            await collect(replay_engine(server), chat())


async def test_an_http_error_answer_is_typed():
    body = json.dumps(
        {"error": {"message": "logprobs must be positive", "type": "BadRequestError", "param": "logprobs", "code": 400}}
    ).encode()
    with replay_server(body, status=400) as server:
        with pytest.raises(UnsupportedParameterError, match="logprobs must be positive") as caught:
            await collect(replay_engine(server), chat())
    assert caught.value.param == "logprobs"


@pytest.mark.model
async def test_a_key_read_from_the_environment_is_sent(server, gguf_path, monkeypatch):
    monkeypatch.setenv("UPSTREAM_TEST_API_KEY", KEY)
    with loaded(make_engine(server, gguf_path, api_key="os.environ/UPSTREAM_TEST_API_KEY")) as engine:
        chunks = await collect(engine, chat(max_tokens=2))
    assert chunks[-1].finish_reason in ("stop", "length")


def test_a_key_from_an_unset_variable_is_unavailable_at_load(gguf_path, monkeypatch):
    monkeypatch.delenv("UPSTREAM_UNSET_API_KEY", raising=False)
    engine = UpstreamEngine(
        ModelSpec(
            name="m",
            source=gguf_path,
            options={"base_url": "http://127.0.0.1:9/v1", "api_key": "os.environ/UPSTREAM_UNSET_API_KEY"},
        )
    )
    with pytest.raises(EngineUnavailableError, match="'UPSTREAM_UNSET_API_KEY', which is not set"):
        engine.load()
    assert not engine.loaded


def test_only_a_variable_named_like_an_api_key_is_read(gguf_path, monkeypatch):
    monkeypatch.setenv("SECRET_KEY", "the-platform-s-own")
    engine = UpstreamEngine(
        ModelSpec(
            name="m",
            source=gguf_path,
            options={"base_url": "http://127.0.0.1:9/v1", "api_key": "os.environ/SECRET_KEY"},
        )
    )
    with pytest.raises(EngineUnavailableError, match="ends in _API_KEY") as caught:
        engine.load()
    assert "the-platform-s-own" not in str(caught.value)


@pytest.mark.model
def test_state_names_the_upstream_but_not_the_key(engine, server):
    state = engine.state()
    assert state["engine"] == "upstream" and state["loaded"] is True
    assert state["upstream"] == server.base_url
    assert KEY not in json.dumps(state)
