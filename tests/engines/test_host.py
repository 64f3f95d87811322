import pytest

from engines.base import GenerationRequest, ModelSpec, OutputFormat, SamplingParams
from engines.echo import EchoEngine
from engines.errors import EngineUnavailableError, UnsupportedParameterError
from engines.host import EngineHost

ECHO = ModelSpec(name="echo", source="", context_length=64)


@pytest.fixture
def host():
    host = EngineHost()
    yield host
    host.shutdown()


def test_ensure_loaded_loads_once(host):
    first = host.ensure_loaded("echo", ECHO)
    assert isinstance(first, EchoEngine) and first.loaded
    assert host.ensure_loaded("echo", ModelSpec(name="echo", source="", context_length=64)) is first
    assert host.engine_for("echo") is first


def test_changed_spec_reloads_and_unloads_the_old_engine(host):
    old = host.ensure_loaded("echo", ECHO)
    new = host.ensure_loaded("echo", ModelSpec(name="echo", source="", context_length=128))
    assert new is not old
    assert not old.loaded and new.loaded
    assert new.spec.context_length == 128
    assert host.engine_for("echo") is new
    assert len(host.states()) == 1


def test_readiness_reasons(host):
    assert host.readiness([]) == (False, "no enabled models are registered")
    assert host.readiness(["echo"]) == (False, "no engine loaded yet")
    host.ensure_loaded("echo", ECHO)
    assert host.readiness(["other", "echo"]) == (True, "ready")
    host.shutdown()
    assert host.readiness(["echo"]) == (False, "no engine loaded yet")


def test_load_failure_is_reported_by_readiness(host, tmp_path):
    missing = tmp_path / "missing.gguf"
    spec = ModelSpec(name="broken", source=str(missing), context_length=256)
    with pytest.raises(EngineUnavailableError):
        host.ensure_loaded("llama_cpp", spec)
    ready, reason = host.readiness(["broken"])
    assert not ready
    assert reason.startswith("broken failed to load: ")
    assert str(missing) in reason
    assert host.engine_for("broken") is None


def test_a_successful_load_clears_an_earlier_failure(host):
    with pytest.raises(EngineUnavailableError, match="unknown engine"):
        host.ensure_loaded("nonsense", ECHO)
    assert "failed to load" in host.readiness(["echo"])[1]
    host.ensure_loaded("echo", ECHO)
    assert host.readiness(["echo"]) == (True, "ready")
    host.shutdown()
    assert host.readiness(["echo"]) == (False, "no engine loaded yet")


def test_states_snapshot(host):
    host.ensure_loaded("echo", ECHO)
    host.ensure_loaded("echo", ModelSpec(name="echo2", source="", context_length=32))
    states = sorted(host.states(), key=lambda s: s["model"])
    assert [(s["model"], s["engine"], s["loaded"], s["in_flight"], s["context_length"]) for s in states] == [
        ("echo", "echo", True, 0, 64),
        ("echo2", "echo", True, 0, 32),
    ]
    assert states[0]["capabilities"] == ["embeddings", "seed", "stop", "streaming", "tokenize", "tools"]


async def test_generate_loads_on_first_use_and_streams(host):
    request = GenerationRequest(request_id="r", sampling=SamplingParams(), prompt="hello there")
    chunks = [c async for c in host.generate("echo", ECHO, request)]
    assert "".join(c.text for c in chunks) == "hello there"
    assert chunks[-1].finish_reason == "stop"
    assert host.engine_for("echo").loaded
    assert host.engine_for("echo").in_flight == 0


@pytest.mark.parametrize(
    "sampling, param",
    [
        (SamplingParams(n=2), "n"),
        (SamplingParams(logprobs=True), "logprobs"),
        (SamplingParams(logit_bias=((1, 5.0),)), "logit_bias"),
    ],
)
async def test_an_engine_never_silently_drops_what_it_cannot_do(host, sampling, param):
    """However a request reaches the host, the echo engine refuses n, logprobs and logit_bias."""
    request = GenerationRequest(request_id="r", sampling=sampling, prompt="a b")
    with pytest.raises(UnsupportedParameterError) as refused:
        async for _ in host.generate("echo", ECHO, request):
            pass
    assert refused.value.param == param


@pytest.mark.parametrize(
    "output_format, param",
    [
        (OutputFormat(kind="json_object"), "response_format"),
        (OutputFormat(kind="grammar", grammar='root ::= "a"'), "grammar"),
    ],
)
async def test_an_engine_never_silently_drops_an_output_format(host, output_format, param):
    """Echo writes no grammar: a format reaching it by any path is refused, never ignored."""
    request = GenerationRequest(request_id="r", sampling=SamplingParams(), prompt="a b", output_format=output_format)
    with pytest.raises(UnsupportedParameterError) as refused:
        async for _ in host.generate("echo", ECHO, request):
            pass
    assert refused.value.param == param
