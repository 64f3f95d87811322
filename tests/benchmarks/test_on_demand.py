"""benchmarks/on_demand.py --runs 1: one cold and one warm request through ./run.sh, and the unload.

Checks that the harness loads, serves and unloads the on-demand model and writes its numbers;
never the timings themselves."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.live, pytest.mark.model, pytest.mark.timeout(400)]

ROOT = Path(__file__).resolve().parents[2]


def test_smoke_run_measures_a_cold_load_and_the_keep_alive_unload(tmp_path):
    result = subprocess.run(
        [sys.executable, "benchmarks/on_demand.py", "--runs", "1", "--keep-alive", "1", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=360,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    measured = json.loads((tmp_path / "on_demand.json").read_text())
    assert measured["raw_load_s"] > 0 and measured["cold_ttft_s"] > 0 and measured["warm_ttft_s"] > 0
    assert measured["rss_unloaded_mib"] < measured["rss_loaded_mib"]
    assert "load's share" in (tmp_path / "summary.md").read_text()
