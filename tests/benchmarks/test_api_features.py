"""benchmarks/api_features.py --smoke: the platform and llama-cpp-python, one of each request.

Checks that the harness starts both sides, that every schema-bound answer validated and that
each side has a rate; never the timings themselves."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.live, pytest.mark.model, pytest.mark.timeout(400)]

ROOT = Path(__file__).resolve().parents[2]


def test_smoke_run_compares_structured_outputs_and_embeddings():
    result = subprocess.run(
        [sys.executable, "benchmarks/api_features.py", "--smoke"], cwd=ROOT, capture_output=True, text=True, timeout=360
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["benchmark"] == "api_features" and record["batch"] == 4
    assert record["results"]["json_schema_all_valid"]["platform"] is True
    rates = [
        *record["results"]["json_schema_tokens_per_s"].values(),
        *record["results"]["embeddings_inputs_per_s"].values(),
    ]
    assert len(rates) == 5 and all(rate > 0 for rate in rates)
    assert set(record["compared"]) == {
        "json_schema_platform_over_direct",
        "grammar_cost_on_platform",
        "embeddings_platform_over_direct",
    }
