"""benchmarks/host_kills.py --rounds 1: the stress run's smoke version (root and `ip netns` only).

Checks that a round kills a host under streams and that no stream hangs; never the timings. Its
six streams outnumber a host's four pool slots, so the killed host always runs some of them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.hosts.network import why_unavailable

ROOT = Path(__file__).resolve().parents[2]


pytestmark = [
    pytest.mark.distributed,
    pytest.mark.live,
    pytest.mark.postgres,
    pytest.mark.timeout(400),
    pytest.mark.skipif(bool(why_unavailable()), reason=why_unavailable() or "-"),
]


def test_one_round_kills_a_host_and_no_stream_hangs():
    result = subprocess.run(
        [sys.executable, "benchmarks/host_kills.py", "--rounds", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=360,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "round 1: killed h" in result.stdout and "error after" in result.stdout
    assert result.stdout.strip().endswith("0 hung past 60 s")
