"""benchmarks/gateway_overhead.py --smoke: the mock upstream and the embedded platform, a few requests.

Checks that the harness starts both, measures every level and reports the added latency; never
the timings themselves. LiteLLM and the distributed side are left to full runs (README)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.live, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]


def test_smoke_run_measures_the_mock_and_the_embedded_platform():
    result = subprocess.run(
        [sys.executable, "benchmarks/gateway_overhead.py", "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["benchmark"] == "gateway_overhead" and list(record["results"]) == ["mock", "embedded"]
    for side in ("mock", "embedded"):
        levels = record["results"][side]
        assert [s["level"] for s in levels] == [1, 4], (side, levels)
        for s in levels:
            assert (s["ok"], s["errors"]) == (20, 0), (side, s)
            assert s["requests_per_s"] > 0 and s["latency_p50_ms"] > 0, (side, s)
    embedded = record["compared"]["embedded"]
    assert set(embedded) == {"1", "4"} and all(v["added_p50_ms"] is not None for v in embedded.values())
    assert "manage.py serve" in record["how"]["embedded"]
    assert "added p50 c=1" in result.stdout  # the latency goal is printed, met or not
