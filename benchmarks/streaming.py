"""Closed-loop streamed chat completions through the official `openai` SDK, and what they measure.

Shared by the benchmarks that drive an OpenAI-compatible server (the platform in either mode,
or llama.cpp's llama-server): one request's timings, a concurrency level's summary, percentiles.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
from openai import AsyncOpenAI

from benchmarks.machine import CpuAccount, CpuSpan

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


def open_client(base_url: str, api_key: str, max_connections: int) -> AsyncOpenAI:
    """An AsyncOpenAI on `base_url`/v1 with room for `max_connections` streams and no SDK retries,
    which would hide failures. The caller closes it."""
    # No keep-alive: llama-server (cpp-httplib) closes a connection after a few requests, and a
    # client reusing it then sees a connection error that is no failure of the server's.
    http_client = httpx.AsyncClient(
        limits=httpx.Limits(max_connections=max_connections + 8, max_keepalive_connections=0),
        timeout=httpx.Timeout(600, connect=10),
    )
    return AsyncOpenAI(base_url=f"{base_url}/v1", api_key=api_key or "none", max_retries=0, http_client=http_client)


@dataclass
class Sample:
    ok: bool
    total_s: float
    ttft_s: float | None = None
    completion_tokens: int = 0
    finish_reason: str | None = None
    error: str | None = None
    cached_tokens: int = 0  # prompt tokens the server says it served from its prefix cache


async def one_request(
    client: AsyncOpenAI, model: str, prompt: str, max_tokens: int, temperature: float = 0.0
) -> Sample:
    """One streamed chat completion; TTFT is the first non-empty content delta, seen by the client."""
    start = time.perf_counter()
    ttft = None
    tokens = cached = 0
    finish = None
    try:
        stream = await client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=max_tokens,
            temperature=temperature,
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in stream:
            if chunk.choices:
                choice = chunk.choices[0]
                if ttft is None and choice.delta and choice.delta.content:
                    ttft = time.perf_counter() - start
                finish = choice.finish_reason or finish
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
                details = chunk.usage.prompt_tokens_details
                cached = (details.cached_tokens or 0) if details else 0
    except Exception as exc:  # reported and counted, the run goes on
        return Sample(False, time.perf_counter() - start, error=f"{type(exc).__name__}: {exc}"[:300])
    total = time.perf_counter() - start
    if ttft is None:
        return Sample(False, total, error="stream carried no content")
    return Sample(True, total, ttft, tokens, finish, cached_tokens=cached)


def print_json_line(record: dict, results: dict[str, list[dict]]) -> int:
    """Print the run as one JSON line (without the long per-request lists); the exit code:
    1 when any request failed, else 0."""
    dropped = ("error_messages", "finish_reasons")
    compact = {
        **record,
        "results": {
            side: [{k: v for k, v in s.items() if k not in dropped} for s in ss] for side, ss in results.items()
        },
    }
    print(json.dumps(compact, separators=(",", ":")))
    failed = sum(s["errors"] for ss in results.values() for s in ss)
    if failed:
        print(f"{failed} request(s) failed", file=sys.stderr)
    return 1 if failed else 0


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


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
        errors = sorted({s.error for s in self.samples if not s.ok})
        return {
            "level": self.level,
            "requests": self.requests,
            "ok": len(ok),
            "errors": self.requests - len(ok),
            "wall_s": round(self.wall_s, 3),
            "completion_tokens": tokens,
            "mean_completion_tokens": round(tokens / len(ok), 1) if ok else None,
            "tokens_per_s": round(tokens / self.wall_s, 2) if self.wall_s > 0 else None,
            "requests_per_s": round(len(ok) / self.wall_s, 3) if self.wall_s > 0 else None,
            "ttft_p50_ms": ms(percentile(ttfts, 0.5)),
            "ttft_p95_ms": ms(percentile(ttfts, 0.95)),
            "latency_p50_ms": ms(percentile(totals, 0.5)),
            "latency_p95_ms": ms(percentile(totals, 0.95)),
            "finish_reasons": dict(sorted(Counter(str(s.finish_reason) for s in ok).items())),
            "error_messages": errors[:5],
            "cpu": self.cpu,
        }


async def run_level(
    client: AsyncOpenAI,
    model: str,
    level: int,
    n_requests: int,
    prompts: list[str],
    max_tokens: int,
    *,
    postgres_is_ours: bool = False,
) -> LevelResult:
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
            samples[index] = await one_request(client, model, prompts[index % len(prompts)], max_tokens)

    cpu = CpuAccount(postgres_is_ours=postgres_is_ours)
    start = time.perf_counter()
    await asyncio.gather(*(client_loop() for _ in range(min(level, n_requests))))
    wall = time.perf_counter() - start
    return LevelResult(level, n_requests, wall, [s for s in samples if s is not None], cpu_record(cpu.measure()))


def cpu_record(span: CpuSpan | None) -> dict | None:
    """A measured span's "cpu" entry in the JSON output."""
    if span is None:
        return None
    return {
        "wall_s": round(span.wall_s, 3),
        "ours_cpu_s": round(span.ours_s, 1),
        "postgres_cpu_s": round(span.postgres_s, 1),
        "other_cpu_s": round(span.other_s, 1),
        "other_share": round(span.other_share, 3),
    }


async def warm_up(client: AsyncOpenAI, model: str, prompts: list[str], max_tokens: int, requests: int = 2) -> None:
    """A few requests before measuring; the first failure is an error, not a number."""
    for index in range(requests):
        sample = await one_request(client, model, prompts[index % len(prompts)], max_tokens)
        if not sample.ok:
            raise RuntimeError(f"warm-up request failed: {sample.error}")


async def measure_levels(
    base_url: str,
    api_key: str,
    model: str,
    levels: list[int],
    prompts: list[str],
    max_tokens: int,
    *,
    requests_per_level: int | None = None,
    warmup: int = 2,
    postgres_is_ours: bool = False,
    label: str = "",
) -> list[LevelResult]:
    """Warm up, then run each concurrency level in turn, printing one progress line per level."""
    client = open_client(base_url, api_key, max(levels))
    try:
        await warm_up(client, model, prompts, max_tokens, warmup)
        print(f"  {label}warm-up: {warmup} requests ok", flush=True)
        results = []
        for level in levels:
            n_requests = requests_per_level or max(8, 2 * level)
            result = await run_level(
                client, model, level, n_requests, prompts, max_tokens, postgres_is_ours=postgres_is_ours
            )
            s = result.summary()
            other = (s["cpu"] or {}).get("other_share")
            print(
                f"  {label}level {level:>3}: {s['ok']}/{n_requests} ok in {s['wall_s']:.2f}s, "
                f"{s['tokens_per_s']} tok/s, TTFT p50 {s['ttft_p50_ms']} ms"
                + (f", other processes {other:.0%} of the machine" if other is not None else ""),
                flush=True,
            )
            results.append(result)
        return results
    finally:
        await client.close()


def fmt(value, spec: str = "") -> str:
    return "n/a" if value is None else format(value, spec)


def ratio(a, b) -> float | None:
    return round(a / b, 3) if a is not None and b not in (None, 0) else None


def print_level_table(title: str, summaries: list[dict]) -> None:
    """One row per concurrency level: throughput, latency, tokens per request, other processes' CPU."""
    base = summaries[0]["tokens_per_s"] if summaries else None
    header = (
        f"{'conc':>4} {'ok/req':>7} {'wall s':>7} {'tok/s':>8} {'x c' + str(summaries[0]['level']):>6} "
        f"{'req/s':>7} {'TTFT p50':>9} {'TTFT p95':>9} {'lat p50':>9} {'lat p95':>9} {'tok/req':>7} {'other CPU':>9}"
    )
    print(f"\n{title} (times in ms; 'x c{summaries[0]['level']}' = tok/s relative to the first level)")
    print(header)
    print("-" * len(header))
    for s in summaries:
        other = (s["cpu"] or {}).get("other_share")
        print(
            f"{s['level']:>4} {str(s['ok']) + '/' + str(s['requests']):>7} {s['wall_s']:>7.2f} "
            f"{fmt(s['tokens_per_s'], '.1f'):>8} {fmt(ratio(s['tokens_per_s'], base), '.2f'):>6} "
            f"{fmt(s['requests_per_s'], '.2f'):>7} {fmt(s['ttft_p50_ms'], '.0f'):>9} {fmt(s['ttft_p95_ms'], '.0f'):>9} "
            f"{fmt(s['latency_p50_ms'], '.0f'):>9} {fmt(s['latency_p95_ms'], '.0f'):>9} "
            f"{fmt(s['mean_completion_tokens'], '.1f'):>7} {fmt(other, '.0%'):>9}"
        )
        for message in s["error_messages"]:
            print(f"     error: {message}")
