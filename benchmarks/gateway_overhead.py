"""What a gateway adds to a request: the platform against LiteLLM's proxy, in front of the same upstream.

A fixed-answer OpenAI server (benchmarks/mock_openai.py) stands in for the model, so that the
numbers are the gateways' own cost. The sides, one at a time, never two at once:

- mock:        the upstream called directly (the baseline for added latency);
- litellm:     LiteLLM's proxy, pinned, from its own cached virtualenv, master key only;
- embedded:    `manage.py serve`, model `mock-gpt` on the upstream engine, a hashed API key,
               one request record per request (SQLite);
- distributed: `manage.py serve --no-setup` + one Celery worker over Redis (PostgreSQL).

Each is driven by the same low-overhead client (benchmarks/http_load.py) with non-streamed chat
completions over keep-alive connections, in a closed loop at every concurrency level. It prints
req/s, p50/p99 latency, the latency added over calling the mock directly, the ratios against
LiteLLM with the issue's goals next to them (informational, never enforced), and one JSON line.
It exits non-zero only when a request failed or a server could not start.

    .venv/bin/python benchmarks/gateway_overhead.py [--levels 1,16,64] [--rounds 2]
        [--sides mock,litellm,embedded,distributed] [--requests N] [--smoke]

--smoke (for CI): the mock and the embedded platform only, a few requests at c=1 and 4.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from statistics import mean

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.gateway_sides import distributed_target, embedded_target, litellm_target, running_mock  # noqa: E402
from benchmarks.http_load import measure_levels  # noqa: E402
from benchmarks.litellm_proxy import LITELLM_VERSION, MODEL, ensure_litellm  # noqa: E402
from benchmarks.machine import cpu_model, noisy  # noqa: E402
from benchmarks.streaming import fmt, print_json_line, ratio  # noqa: E402

BASELINE, REFERENCE = "mock", "litellm"
SIDES = (BASELINE, REFERENCE, "embedded", "distributed")
PLATFORM_SIDES = ("embedded", "distributed")
# The issue's goals, on the keyed and recorded workload (printed, never enforced).
THROUGHPUT_GOAL_LEVEL, THROUGHPUT_GOAL_RATIO = 16, 1.5
ADDED_LATENCY_GOAL_LEVEL, ADDED_LATENCY_GOAL_MS = 1, 5.0


def requests_for(level: int, fixed: int | None) -> int:
    """Requests per level: enough for a p99 at low concurrency, a few rounds of the pool at high."""
    return fixed or max(300, 20 * level)


async def measure_target(target, args) -> list[dict]:
    return await measure_levels(
        target.base_url,
        target.api_key,
        MODEL,
        args.levels,
        requests_per_level=lambda level: requests_for(level, args.requests),
        warmup=args.warmup,
        label=f"[{target.side}] ",
    )


def measure_side(side: str, mock, args, tmp: Path) -> tuple[list[dict], str]:
    """Start one side (the mock is already running), measure every level, stop it."""
    if side == BASELINE:
        return asyncio.run(measure_target(mock, args)), mock.command
    starters = {
        REFERENCE: lambda: litellm_target(args.litellm, mock, tmp),
        "embedded": lambda: embedded_target(mock, tmp),
        "distributed": lambda: distributed_target(mock, tmp),
    }
    with starters[side]() as target:
        print(f"[{side}] ready on {target.base_url}: {target.command}", flush=True)
        return asyncio.run(measure_target(target, args)), target.command


def combine_rounds(rounds: list[list[dict]]) -> list[dict]:
    """One summary per level from several rounds: the mean of each number, requests and errors summed."""
    combined = []
    for per_level in zip(*rounds):
        first = per_level[0]
        entry = {
            "level": first["level"],
            "rounds": len(per_level),
            "requests": sum(s["requests"] for s in per_level),
            "ok": sum(s["ok"] for s in per_level),
            "errors": sum(s["errors"] for s in per_level),
            "error_messages": sorted({m for s in per_level for m in s["error_messages"]})[:5],
        }
        for name in ("requests_per_s", "latency_p50_ms", "latency_p99_ms"):
            values = [s[name] for s in per_level if s[name] is not None]
            entry[name] = round(mean(values), 1) if values else None
        entry["per_round_requests_per_s"] = [s["requests_per_s"] for s in per_level]
        entry["other_cpu_share"] = [(s["cpu"] or {}).get("other_share") for s in per_level]
        combined.append(entry)
    return combined


def comparison(results: dict[str, list[dict]]) -> dict[str, dict[str, dict]]:
    """Per side and level: latency added over the mock, and req/s and added latency against LiteLLM."""

    def by_level(side):
        return {s["level"]: s for s in results.get(side, [])}

    base, reference = by_level(BASELINE), by_level(REFERENCE)
    out: dict[str, dict[str, dict]] = {}
    for side in SIDES[1:]:
        for level, s in by_level(side).items():
            b, r = base.get(level), reference.get(level)
            added = {q: _minus(s[f"latency_{q}_ms"], b and b[f"latency_{q}_ms"]) for q in ("p50", "p99")}
            entry = {"requests_per_s": s["requests_per_s"], "added_p50_ms": added["p50"], "added_p99_ms": added["p99"]}
            if side != REFERENCE and r is not None:
                entry["requests_per_s_over_litellm"] = ratio(s["requests_per_s"], r["requests_per_s"])
                entry["added_p50_over_litellm"] = ratio(
                    added["p50"], _minus(r["latency_p50_ms"], b and b["latency_p50_ms"])
                )
            out.setdefault(side, {})[str(level)] = entry
    return out


def _minus(a, b):
    return None if a is None or b is None else round(a - b, 1)


def goals(compared: dict[str, dict[str, dict]]) -> list[dict]:
    """Each issue goal this run covers, per platform side, with whether it was met (informational)."""
    out = []
    for side in PLATFORM_SIDES:
        by_level = compared.get(side, {})
        r = by_level.get(str(THROUGHPUT_GOAL_LEVEL), {}).get("requests_per_s_over_litellm")
        if r is not None:
            out.append(
                {
                    "side": side,
                    "goal": f"req/s c={THROUGHPUT_GOAL_LEVEL} >= {THROUGHPUT_GOAL_RATIO}x LiteLLM",
                    "value": f"{r:.2f}x",
                    "met": r >= THROUGHPUT_GOAL_RATIO,
                }
            )
        added = by_level.get(str(ADDED_LATENCY_GOAL_LEVEL), {}).get("added_p50_ms")
        if added is not None:
            out.append(
                {
                    "side": side,
                    "goal": f"added p50 c={ADDED_LATENCY_GOAL_LEVEL} <= {ADDED_LATENCY_GOAL_MS:.0f} ms",
                    "value": f"{added:.1f} ms",
                    "met": added <= ADDED_LATENCY_GOAL_MS,
                }
            )
    return out


def print_report(results: dict[str, list[dict]], compared: dict, met: list[dict]) -> None:
    header = (
        f"{'side':<12} {'conc':>4} {'ok/req':>11} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'+p50 ms':>8} {'+p99 ms':>8} {'req/s/LiteLLM':>13} {'+p50/LiteLLM':>12}"
    )
    print("\nper side (+p50/+p99: latency added over calling the mock directly; ratios: above 1 = more than LiteLLM)")
    print(header)
    print("-" * len(header))
    for side, summaries in results.items():
        for s in summaries:
            c = compared.get(side, {}).get(str(s["level"]), {})
            print(
                f"{side:<12} {s['level']:>4} {str(s['ok']) + '/' + str(s['requests']):>11} "
                f"{fmt(s['requests_per_s'], '.1f'):>8} {fmt(s['latency_p50_ms'], '.1f'):>7} "
                f"{fmt(s['latency_p99_ms'], '.1f'):>7} {fmt(c.get('added_p50_ms'), '.1f'):>8} "
                f"{fmt(c.get('added_p99_ms'), '.1f'):>8} {fmt(c.get('requests_per_s_over_litellm'), '.2f'):>13} "
                f"{fmt(c.get('added_p50_over_litellm'), '.2f'):>12}"
            )
            for message in s["error_messages"]:
                print(f"     error: {message}")
    if met:
        print("\ngoals (printed, never enforced; timings on a shared machine are noisy):")
        for g in met:
            print(f"{g['side']:<12} {g['goal']:<32} {g['value']:>9}  {'met' if g['met'] else 'NOT met'}")


def _csv(kind, allowed=None):
    def parse(text: str):
        items = [kind(part.strip()) for part in text.split(",") if part.strip()]
        if not items or (allowed and set(items) - set(allowed)) or (kind is int and min(items) < 1):
            raise argparse.ArgumentTypeError(
                f"comma-separated {'of ' + ', '.join(allowed) if allowed else 'positive integers'}"
            )
        return items

    return parse


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", type=_csv(int), default=[1, 16, 64], help="concurrency levels (default 1,16,64)")
    parser.add_argument("--requests", type=int, default=None, help="requests per level (default max(300, 20*level))")
    parser.add_argument("--warmup", type=int, default=20, help="requests before measuring, per side and round")
    parser.add_argument(
        "--rounds", type=int, default=1, help="run every side this many times, in turn; the report shows the mean"
    )
    parser.add_argument(
        "--sides",
        type=_csv(str, SIDES),
        default=list(SIDES),
        help="which to run, in this order (the mock is always started; default all)",
    )
    parser.add_argument(
        "--litellm",
        type=Path,
        default=None,
        help=f"an existing `litellm` program (default: litellm[proxy]=={LITELLM_VERSION}, installed "
        "once into ~/.cache/inference-platform/litellm-<version>/venv)",
    )
    parser.add_argument("--smoke", action="store_true", help="CI: mock and embedded only, c=1,4, 20 requests each")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sides, args.levels, args.requests, args.warmup, args.rounds = [BASELINE, "embedded"], [1, 4], 20, 2, 1
    return args


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt  # the same clean-up as Ctrl-C


def main(argv=None) -> int:
    args = parse_args(argv)
    if REFERENCE in args.sides and args.litellm is None:
        args.litellm = ensure_litellm(log=lambda line: print(line, flush=True))
    print(
        f"gateway overhead: sides={args.sides} levels={args.levels} rounds={args.rounds} "
        f"requests/level={args.requests or 'max(300, 20*level)'} cores={os.cpu_count()} "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    signal.signal(signal.SIGTERM, _on_sigterm)
    rounds: dict[str, list[list[dict]]] = {side: [] for side in args.sides}
    how: dict[str, str] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="gateway-overhead-") as tmp_root, running_mock(Path(tmp_root)) as mock:
            for round_index in range(args.rounds):
                for side in args.sides:  # one after the other, never two at once
                    tmp = Path(tmp_root) / f"{side}-{round_index}"
                    tmp.mkdir()
                    summaries, how[side] = measure_side(side, mock, args, tmp)
                    rounds[side].append(summaries)
    except KeyboardInterrupt:
        print("\ninterrupted; the processes, database and files this run made are gone", file=sys.stderr)
        return 130

    results = {side: combine_rounds(per_round) for side, per_round in rounds.items()}
    compared = comparison(results)
    met = goals(compared)
    print_report(results, compared, met)
    for side, per_round in rounds.items():
        for summaries in per_round:
            for s in summaries:
                if s["cpu"] and noisy(s["cpu"]["other_share"], s["cpu"]["wall_s"]):
                    print(
                        f"Warning: other processes used {s['cpu']['other_share']:.0%} of the machine during "
                        f"{side} c={s['level']}; its numbers are noisy."
                    )
    record = {
        "benchmark": "gateway_overhead",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "litellm": LITELLM_VERSION if REFERENCE in args.sides else None,
        "levels": args.levels,
        "rounds": args.rounds,
        "machine": {"cores": os.cpu_count(), "cpu": cpu_model()},
        "how": how,
        "results": results,
        "compared": compared,
        "goals": met,
    }
    return print_json_line(record, results)


if __name__ == "__main__":
    sys.exit(main())
