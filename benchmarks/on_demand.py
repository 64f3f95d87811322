"""Load on demand and keep-alive on the bundled SmolLM2: what a cold request pays, and what an unload returns.

The baseline is the raw engine in this process: loading the llama.cpp engine for the same GGUF
and context (engines.registry, no Django, no HTTP). The platform runs as the README starts it
(`./run.sh`, embedded, fresh SQLite), with an on-demand model whose keep-alive is short. Each
run: a cold streamed request (the model is not loaded: its time to first token includes the
load), then a warm one, then the wait until keep-alive unloads it, reading the server's RSS
loaded and unloaded. Printed: medians, and the load's share of the cold request against the
raw engine's load time (1.0 would mean loading through the platform costs nothing more).

    .venv/bin/python benchmarks/on_demand.py [--runs 3] [--keep-alive 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psutil  # noqa: E402

from benchmarks.platforms import embedded_platform  # noqa: E402
from engines.base import ModelSpec  # noqa: E402
from engines.registry import create_engine  # noqa: E402
from models_registry.bundled import bundled_model_path  # noqa: E402  (no Django)
from tests.compat.live_server import manage_py, platform_env  # noqa: E402

MODEL = "smollm2-on-demand"
CONTEXT = 2048


def raw_load_seconds() -> float:
    """Load and unload the engine in this process; seconds the load took."""
    spec = ModelSpec(name=MODEL, source=str(bundled_model_path()), context_length=CONTEXT)
    engine = create_engine("llama_cpp", spec)
    started = time.perf_counter()
    engine.load()
    took = time.perf_counter() - started
    engine.unload()
    return took


def ttft(base_url: str, api_key: str) -> float:
    """Seconds to the first streamed content of a short greedy chat."""
    body = {
        "model": MODEL,
        "stream": True,
        "max_tokens": 8,
        "temperature": 0,
        "messages": [{"role": "user", "content": "Say hi"}],
    }
    started = time.perf_counter()
    first = None
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, headers=headers, timeout=300) as answer:
        answer.raise_for_status()
        for line in answer.iter_lines():
            if first is None and '"content":"' in line and '"content":""' not in line:
                first = time.perf_counter() - started
    if first is None:
        raise RuntimeError("the stream had no content")
    return first


def loaded(base_url: str, api_key: str) -> bool:
    models = httpx.get(f"{base_url}/v1/models", headers={"Authorization": f"Bearer {api_key}"}, timeout=30).json()
    return any(m["id"] == MODEL and m.get("loaded") for m in models["data"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep-alive", type=int, default=2, help="seconds")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    raw = [raw_load_seconds() for _ in range(args.runs)]
    print(f"raw engine load: {', '.join(f'{s:.2f}' for s in raw)} s", flush=True)
    cold, warm, rss_loaded, rss_unloaded, unload_after = [], [], [], [], []
    with (
        tempfile.TemporaryDirectory(prefix="on-demand-") as tmp,
        embedded_platform(Path(tmp), "llama_cpp", settings={"RECONCILE_SECONDS": "0.5"}) as server,
    ):
        manage_py(
            platform_env(DATABASE_URL=f"sqlite:///{Path(tmp) / 'live.sqlite3'}"),
            *("register_model", MODEL, "--source", str(bundled_model_path()), "--engine", "llama_cpp"),
            *("--context-length", str(CONTEXT), "--replicas", "0", "--keep-alive", f"{args.keep_alive}s"),
        )
        process = psutil.Process(server.process.pid)
        for run in range(args.runs):
            while loaded(server.base_url, server.api_key):
                time.sleep(0.2)
            cold.append(ttft(server.base_url, server.api_key))
            warm.append(ttft(server.base_url, server.api_key))
            rss_loaded.append(process.memory_info().rss)
            ended = time.perf_counter()
            while loaded(server.base_url, server.api_key):
                time.sleep(0.1)
            unload_after.append(time.perf_counter() - ended)
            time.sleep(0.5)
            rss_unloaded.append(process.memory_info().rss)
            print(
                f"run {run + 1}: cold TTFT {cold[-1]:.2f} s, warm {warm[-1]:.3f} s, unloaded "
                f"{unload_after[-1]:.1f} s after its last request, RSS {rss_loaded[-1] / 2**20:.0f} -> "
                f"{rss_unloaded[-1] / 2**20:.0f} MiB",
                flush=True,
            )
    result = {
        "raw_load_s": statistics.median(raw),
        "cold_ttft_s": statistics.median(cold),
        "warm_ttft_s": statistics.median(warm),
        "load_share_s": statistics.median(c - w for c, w in zip(cold, warm)),
        "unloaded_after_s": statistics.median(unload_after),
        "keep_alive_s": args.keep_alive,
        "rss_loaded_mib": statistics.median(rss_loaded) / 2**20,
        "rss_unloaded_mib": statistics.median(rss_unloaded) / 2**20,
    }
    result["load_ratio_to_raw"] = result["load_share_s"] / result["raw_load_s"]
    lines = [
        "| | median |",
        "|---|---:|",
        f"| raw engine load (baseline) | {result['raw_load_s']:.2f} s |",
        f"| cold request TTFT (load included) | {result['cold_ttft_s']:.2f} s |",
        f"| warm request TTFT | {result['warm_ttft_s']:.3f} s |",
        f"| the load's share of the cold TTFT / raw load | **{result['load_ratio_to_raw']:.2f}x** |",
        f"| unloaded after its last request (keep-alive {args.keep_alive} s) | {result['unloaded_after_s']:.1f} s |",
        f"| server RSS loaded -> unloaded | {result['rss_loaded_mib']:.0f} -> {result['rss_unloaded_mib']:.0f} MiB |",
    ]
    print("\n".join(lines))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "on_demand.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / "summary.md").write_text(
            "# Load on demand and keep-alive (embedded, SmolLM2)\n\n" + "\n".join(lines) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
