"""benchmarks/run_benchmarks.py end to end with tiny settings: it starts the platform itself, measures
every prompt class and concurrency level, and writes its JSON, summary and charts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.run_benchmarks import PROMPT_CLASSES
from tests.compat.browser import PNG_MAGIC

pytestmark = [pytest.mark.live, pytest.mark.model, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]


def test_speed_and_concurrency_are_measured_and_written(tmp_path):
    out = tmp_path / "results"
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/run_benchmarks.py",
            "--runs",
            "2",
            "--levels",
            "1,3",
            "--requests-per-level",
            "3",
            "--max-tokens",
            "8",
            "--warmup",
            "1",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=500,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["target"] == "the platform, embedded"
    assert list(record["speed"]) == ["short", "medium", "long"]
    for name, speed in record["speed"].items():
        assert (speed["runs"], speed["ok"]) == (2, 2), (name, speed)
        assert speed["ttft_ms_median"] > 0 and speed["prompt_chars"] == len(PROMPT_CLASSES[name])
    assert [(s["level"], s["ok"], s["errors"]) for s in record["concurrency"]] == [(1, 3, 0), (3, 3, 0)]
    assert all(s["tokens_per_s"] > 0 for s in record["concurrency"])

    assert json.loads((out / "results.json").read_text())["speed"].keys() == record["speed"].keys()
    assert "## Speed by prompt class" in (out / "summary.md").read_text()
    for chart in ("speed_by_prompt.png", "concurrency.png"):
        assert (out / chart).read_bytes().startswith(PNG_MAGIC), chart


def test_the_long_prompt_fits_the_bundled_context_with_room_to_answer():
    from llama_cpp import Llama

    from models_registry.bundled import bundled_model_path

    llama = Llama(model_path=str(bundled_model_path()), n_ctx=64, vocab_only=True, verbose=False)
    tokens = {name: len(llama.tokenize(prompt.encode(), add_bos=False)) for name, prompt in PROMPT_CLASSES.items()}
    assert tokens["short"] < 20 < tokens["medium"] < 300 < tokens["long"] <= 2048 - 128 - 64, tokens
