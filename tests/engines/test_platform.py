import pytest

from engines.platform import FORCEABLE_ENGINES, detect_best_engine, explain_engine_choice, get_platform_info


def info(**overrides) -> dict:
    """A plain Linux CPU box; each test flips only the facts it is about."""
    base = {
        "system": "linux",
        "machine": "x86_64",
        "cpu_count": 2,
        "memory_total_bytes": 8 << 30,
        "cuda_available": False,
        "cuda_devices": [],
        "apple_silicon": False,
        "vllm_importable": False,
        "mlx_lm_importable": False,
        "llama_cpp_importable": True,
    }
    return {**base, **overrides}


CUDA = {"cuda_available": True, "cuda_devices": [{"name": "H100", "memory_mb": 81559}]}
APPLE = {"system": "darwin", "machine": "arm64", "apple_silicon": True}


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        ({**CUDA, "vllm_importable": True}, "vllm"),
        (CUDA, "llama_cpp"),
        ({**APPLE, "mlx_lm_importable": True}, "mlx"),
        (APPLE, "llama_cpp"),
        ({"vllm_importable": True, "mlx_lm_importable": True}, "llama_cpp"),  # libraries alone are not hardware
        ({}, "llama_cpp"),
    ],
)
def test_detect_best_engine(facts, expected):
    assert detect_best_engine(info=info(**facts)) == expected


@pytest.mark.parametrize("forced", ["echo", "mlx", "vllm", "llama_cpp"])
def test_forced_engine_wins_over_hardware(forced):
    engine, reason = explain_engine_choice(forced, info(**CUDA, vllm_importable=True))
    assert engine == forced
    assert forced in reason


def test_force_auto_means_detect():
    assert detect_best_engine("auto", info(**APPLE, mlx_lm_importable=True)) == "mlx"


def test_invalid_force_raises_with_choices():
    with pytest.raises(ValueError, match="bogus") as excinfo:
        detect_best_engine("bogus", info())
    assert all(choice in str(excinfo.value) for choice in FORCEABLE_ENGINES)


def test_reason_states_the_facts():
    _, reason = explain_engine_choice(info=info(**CUDA, vllm_importable=True))
    assert "CUDA: yes" in reason and "vllm" in reason
    _, reason = explain_engine_choice(info=info(**APPLE))
    assert "CUDA: no" in reason and "Apple Silicon: yes" in reason and reason.endswith("llama_cpp")
    _, reason = explain_engine_choice(info=info())
    assert "CUDA: no" in reason and "Apple Silicon: no" in reason


def test_real_platform_info_on_this_machine():
    facts = get_platform_info()
    for key in ("system", "machine", "cpu_count", "memory_total_bytes", "cuda_available", "apple_silicon"):
        assert key in facts, key
    assert facts["system"] == "linux"
    assert facts["cpu_count"] >= 1
    assert facts["memory_total_bytes"] > 1 << 30
    assert facts["cuda_available"] is bool(facts["cuda_devices"])  # a lent GPU machine may have CUDA
    assert facts["apple_silicon"] is False
    assert facts["llama_cpp_importable"] is True
    assert detect_best_engine() == "llama_cpp"
