"""benchmarks/against_llama_server.py end to end, tiny: llama-server, embedded and distributed, one
stream each, a few tokens. Checks the harness measures and reports every side, never the timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.compat.browser import PNG_MAGIC

pytestmark = [
    pytest.mark.live,
    pytest.mark.model,
    pytest.mark.distributed,
    pytest.mark.timeout(1800),
]  # the first run on a machine builds llama-server (minutes)

ROOT = Path(__file__).resolve().parents[2]
SIDES = ["llama-server", "embedded", "distributed"]


def test_every_side_is_measured_and_compared(tmp_path, llama_server_binary):
    out = tmp_path / "results"
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/against_llama_server.py",
            "--levels",
            "1",
            "--requests-per-level",
            "2",
            "--max-tokens",
            "8",
            "--warmup",
            "1",
            "--llama-server",
            str(llama_server_binary),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert list(record["results"]) == SIDES
    settings = record["settings"]
    assert settings["parallel"] >= 1 and settings["threads"] >= 1 and settings["ctx_per_slot"] == 2048
    llama_command = record["how"]["llama-server"]["command"]
    assert llama_command[llama_command.index("--parallel") + 1] == str(settings["parallel"])
    assert llama_command[llama_command.index("--ctx-size") + 1] == str(settings["parallel"] * 2048)
    for side in SIDES:
        (level,) = record["results"][side]
        assert (level["level"], level["ok"], level["errors"]) == (1, 2, 0), (side, level)
        assert 0 < level["mean_completion_tokens"] <= 8, (side, level)
        assert level["tokens_per_s"] > 0 and level["ttft_p50_ms"] > 0, (side, level)
    for side in ("embedded", "distributed"):
        ratios = record["platform_over_llama_server"][side]["1"]
        assert ratios["tokens_per_s_ratio"] > 0 and ratios["ttft_p50_extra_ms"] is not None
    assert {goal["side"] for goal in record["goals"]} == {"embedded", "distributed"}
    assert "goals (printed, never enforced" in result.stdout

    saved = json.loads((out / "results.json").read_text())
    assert {side: [s["ok"] for s in levels] for side, levels in saved["results"].items()} == {
        side: [2] for side in SIDES
    }
    summary = (out / "summary.md").read_text()
    assert "| llama-server | 1 | 2/2 |" in summary and "| distributed | 1 | 2/2 |" in summary
    assert (out / "against_llama_server.png").read_bytes().startswith(PNG_MAGIC)
