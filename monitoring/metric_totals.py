"""What one finished request adds to the cumulative /metrics totals, and how the stored totals read
back per model (plain Python, no database).

Prometheus counters must never go down: a drop reads as a process restart, and `rate()` then
shows a spike. So /metrics does not count request records (pruning them would lower the
counts); each new record adds its increments to a small table of running totals instead, and
those are only ever added to.

A total is named by a series string:

- `finished:<reason>` (vLLM's finished_reason: stop, length, abort) or `failed`: requests;
- `prompt_tokens`, `generation_tokens`: tokens;
- `prefix_cache_queries`, `prefix_cache_hits`: prompt tokens of requests whose engine reports its
  prefix cache, and those of them it found cached (vLLM's definitions);
- `<histogram>:count`, `<histogram>:sum` (seconds) and `<histogram>:bucket:<i>`: observations
  whose value lies in bucket i, that is at most bound i and above bound i-1. The exposition
  makes them cumulative (`le`), so one observation touches one row, not every bucket above it.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
from collections.abc import Mapping

# vLLM's own bucket bounds (vllm/v1/metrics/loggers.py), so its Grafana boards' quantiles fit.
E2E_BUCKETS = (
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
    1920.0,
    7680.0,
)
TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
)
QUEUE_BUCKETS = E2E_BUCKETS

# name -> (the record's millisecond field, bucket bounds in seconds)
HISTOGRAMS = {
    "e2e": ("duration_ms", E2E_BUCKETS),
    "ttft": ("ttft_ms", TTFT_BUCKETS),
    "queue": ("queue_wait_ms", QUEUE_BUCKETS),
}

# Our finish reasons as vLLM's `finished_reason` label names them; "error" is not a success.
FINISHED_REASONS = {"stop": "stop", "length": "length", "cancelled": "abort"}
FAILED = "failed"
FINISHED_PREFIX = "finished:"
BUCKET_PREFIX = "bucket:"
PROMPT_TOKENS, GENERATION_TOKENS = "prompt_tokens", "generation_tokens"
# Endpoints whose requests run no model (api/openai/tokenize.py records under these names). vLLM's
# metrics leave its /tokenize out too, and their milliseconds would pull the model's latency down.
TOKENIZER_ENDPOINTS = ("tokenize", "detokenize")
PREFIX_CACHE_QUERIES, PREFIX_CACHE_HITS = "prefix_cache_queries", "prefix_cache_hits"


def finished_series(reason: str) -> str:
    return f"{FINISHED_PREFIX}{reason}"


def histogram_series(histogram: str, part: str) -> str:
    """`part` is "count", "sum" or "bucket:<i>"."""
    return f"{histogram}:{part}"


def bucket_series(histogram: str, index: int) -> str:
    return histogram_series(histogram, f"{BUCKET_PREFIX}{index}")


@functools.cache
def _bounds_ms(bounds: tuple[float, ...]) -> list[float]:
    # Rounded: 0.07 * 1000 is 70.00000000000001, which would move a bucket edge.
    return [round(bound * 1000, 6) for bound in bounds]


def bucket_index(bounds: tuple[float, ...], milliseconds: float) -> int | None:
    """The first bucket whose bound holds the value, or None above the last bound (only +Inf holds it)."""
    index = bisect.bisect_left(_bounds_ms(bounds), milliseconds)
    return index if index < len(bounds) else None


def record_increments(record: Mapping) -> dict[str, float]:
    """{series: amount} one record adds. Only requests that reached a model count (engine set):
    a client naming a model that does not exist must not create series. Latency histograms hold
    requests that finished, not those that failed. Tokenizer requests count nowhere here (their
    records and the dashboard still show them)."""
    if not record.get("engine") or record.get("endpoint") in TOKENIZER_ENDPOINTS:
        return {}
    increments = {
        PROMPT_TOKENS: record.get("prompt_tokens") or 0,
        GENERATION_TOKENS: record.get("completion_tokens") or 0,
    }
    if record.get("cached_tokens") is not None:  # engines without a prefix cache leave it empty
        increments[PREFIX_CACHE_QUERIES] = record.get("prompt_tokens") or 0
        increments[PREFIX_CACHE_HITS] = record["cached_tokens"]
    reason = FINISHED_REASONS.get(record.get("finish_reason") or "")
    if reason is None:
        increments[FAILED] = 1
        return increments
    increments[finished_series(reason)] = 1
    for name, (field, bounds) in HISTOGRAMS.items():
        milliseconds = record.get(field)
        if milliseconds is None:
            continue
        increments[histogram_series(name, "count")] = 1
        increments[histogram_series(name, "sum")] = milliseconds / 1000
        index = bucket_index(bounds, milliseconds)
        if index is not None:
            increments[bucket_series(name, index)] = 1
    return increments


@dataclasses.dataclass
class HistogramTotals:
    """Cumulative bucket counts (one per bound, `le` semantics), the count and the sum in seconds."""

    buckets: list[int]
    count: int = 0
    sum_seconds: float = 0.0


@dataclasses.dataclass
class ModelTotals:
    """One model's totals as /metrics exports them, read back from the stored series."""

    prompt_tokens: int = 0
    generation_tokens: int = 0
    prefix_cache_queries: int = 0
    prefix_cache_hits: int = 0
    finished: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(FINISHED_REASONS.values(), 0))
    failed: int = 0
    histograms: dict[str, HistogramTotals] = dataclasses.field(
        default_factory=lambda: {name: HistogramTotals([0] * len(bounds)) for name, (_, bounds) in HISTOGRAMS.items()}
    )

    def add(self, series: str, value: float) -> None:
        """Add one stored total; a series this version does not export is left out."""
        if series == PROMPT_TOKENS:
            self.prompt_tokens += int(value)
        elif series == GENERATION_TOKENS:
            self.generation_tokens += int(value)
        elif series == PREFIX_CACHE_QUERIES:
            self.prefix_cache_queries += int(value)
        elif series == PREFIX_CACHE_HITS:
            self.prefix_cache_hits += int(value)
        elif series == FAILED:
            self.failed += int(value)
        elif series.startswith(FINISHED_PREFIX):
            reason = series.removeprefix(FINISHED_PREFIX)
            self.finished[reason] = self.finished.get(reason, 0) + int(value)
        else:
            name, _, part = series.partition(":")
            histogram = self.histograms.get(name)
            if histogram is None:
                return
            if part == "count":
                histogram.count += int(value)
            elif part == "sum":
                histogram.sum_seconds += value
            elif part.startswith(BUCKET_PREFIX):
                # Stored per bucket; exported cumulatively (`le`): this bucket and every one above it.
                for above in range(int(part.removeprefix(BUCKET_PREFIX)), len(histogram.buckets)):
                    histogram.buckets[above] += int(value)
