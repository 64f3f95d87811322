"""The vLLM engine: its command line, its honesty without vLLM, and serving through a stand-in."""

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import psutil
import pytest

from engines.base import GenerationRequest, ModelSpec, SamplingParams
from engines.errors import EngineUnavailableError
from engines.vllm import VllmEngine

from .openai_server import vllm_stand_in_command

VLLM_PRESENT = bool(
    shutil.which("vllm") or Path(sys.executable).with_name("vllm").exists() or importlib.util.find_spec("vllm")
)


@pytest.fixture
def fake_vllm(tmp_path) -> str:
    """An executable named vllm that is never run: the command line is only built."""
    path = tmp_path / "vllm"
    path.write_text("#!/bin/sh\nexit 99\n")
    path.chmod(0o755)
    return str(path)


def spec(**options) -> ModelSpec:
    return ModelSpec(name="qwen", source="Qwen/Qwen2.5-0.5B-Instruct", context_length=4096, options=options)


def test_command_line_and_environment_from_options(fake_vllm):
    engine = VllmEngine(
        spec(
            vllm_executable=fake_vllm,
            port=8123,
            gpu=1,
            max_model_len=1024,
            gpu_memory_utilization=0.5,
            extra_args=["--dtype", "half", "--override-generation-config", '{"temperature": 0.2}'],
        )
    )
    supervisor = engine.build_supervisor()
    assert supervisor.command == [
        fake_vllm,
        "serve",
        "Qwen/Qwen2.5-0.5B-Instruct",
        "--host",
        "127.0.0.1",
        "--port",
        "8123",
        "--max-model-len",
        "1024",
        "--gpu-memory-utilization",
        "0.5",
        "--served-model-name",
        "qwen",
        "--dtype",
        "half",
        "--override-generation-config",
        '{"temperature": 0.2}',
    ]
    assert supervisor.env["CUDA_VISIBLE_DEVICES"] == "1"
    assert supervisor.health_url == "http://127.0.0.1:8123/health"
    assert supervisor.status == "stopped" and supervisor.pid is None  # built, not started


def test_defaults_follow_the_model_spec(fake_vllm):
    supervisor = VllmEngine(spec(vllm_executable=fake_vllm)).build_supervisor()
    command = supervisor.command
    assert command[command.index("--max-model-len") + 1] == "4096"
    assert command[command.index("--gpu-memory-utilization") + 1] == "0.9"
    port = command[command.index("--port") + 1]
    assert int(port) == supervisor.port > 0  # port 0 picked a free one
    assert supervisor.env.get("CUDA_VISIBLE_DEVICES") == os.environ.get("CUDA_VISIBLE_DEVICES")


def test_several_gpus_become_one_device_list(fake_vllm):
    supervisor = VllmEngine(spec(vllm_executable=fake_vllm, gpu=[0, 1])).build_supervisor()
    assert supervisor.env["CUDA_VISIBLE_DEVICES"] == "0,1"


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"extra_args": "--dtype half"}, "extra_args"),
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
        ({"max_model_len": 0}, "max_model_len"),
    ],
)
def test_bad_options_are_refused_by_name(fake_vllm, options, named):
    with pytest.raises(EngineUnavailableError, match=named):
        VllmEngine(spec(vllm_executable=fake_vllm, **options)).load()


@pytest.mark.skipif(VLLM_PRESENT, reason="vLLM is installed here")
def test_load_without_vllm_says_vllm_is_missing():
    engine = VllmEngine(spec())
    with pytest.raises(EngineUnavailableError, match="vLLM is not installed") as caught:
        engine.load()
    assert "requirements/gpu.txt" in str(caught.value)
    assert not engine.loaded and engine.supervisor is None


def test_named_vllm_executable_must_exist(tmp_path):
    missing = str(tmp_path / "no-such-vllm")
    with pytest.raises(EngineUnavailableError, match="no-such-vllm"):
        VllmEngine(spec(vllm_executable=missing)).load()


def test_capabilities_are_what_the_proxy_forwards():
    assert VllmEngine.capabilities == {
        "streaming",
        "stop",
        "seed",
        "tools",
        "response_format",
        "embeddings",
        "tokenize",
    }


@pytest.mark.model
async def test_serves_a_streamed_completion_through_a_stand_in(gguf_path):
    """vLLM's part is only the command line: swap it and the rest runs for real."""
    engine = VllmEngine(
        ModelSpec(
            name="smollm2", source=gguf_path, context_length=2048, options={"command": vllm_stand_in_command(gguf_path)}
        )
    )
    engine.load()
    try:
        assert engine.state()["server"]["status"] == "ready"
        request = GenerationRequest(
            request_id="t", prompt="Once upon a time", sampling=SamplingParams(max_tokens=8, temperature=0.0, seed=7)
        )
        chunks = [chunk async for chunk in engine.generate(request)]
        # The supervisor waited on vLLM's health route, which only the stand-in adds.
        assert '"GET /health HTTP/1.1" 200' in engine.supervisor.log_tail()
        pid = engine.supervisor.pid
    finally:
        engine.unload()
    assert len([c for c in chunks if c.text]) >= 4
    assert chunks[-1].finish_reason == "length"
    assert not psutil.pid_exists(pid)
