"""Reads over request records: the totals /metrics exports, computed by the database.

Counting in the database at scrape time gives every web and worker process one consistent
view without any shared metrics state: a request is counted once its one record exists.
"""

from __future__ import annotations

import dataclasses

from django.db.models import Count, Q, Sum

from models_registry.models import ServedModel

from .models import RequestRecord

# vLLM's own bucket bounds (vllm/v1/metrics/loggers.py), so its Grafana boards' quantiles fit.
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
               120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
QUEUE_BUCKETS = E2E_BUCKETS

# name -> (the record's millisecond column, bucket bounds in seconds)
HISTOGRAMS = {
    "e2e": ("duration_ms", E2E_BUCKETS),
    "ttft": ("ttft_ms", TTFT_BUCKETS),
    "queue": ("queue_wait_ms", QUEUE_BUCKETS),
}

# Our finish reasons as vLLM's `finished_reason` label names them; "error" is not a success.
FINISHED_REASONS = {"stop": "stop", "length": "length", "cancelled": "abort"}


@dataclasses.dataclass
class HistogramTotals:
    """Cumulative bucket counts (one per bound, `le` semantics), the count and the sum in seconds."""

    buckets: list[int]
    count: int = 0
    sum_seconds: float = 0.0


@dataclasses.dataclass
class ModelTotals:
    prompt_tokens: int = 0
    generation_tokens: int = 0
    finished: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(FINISHED_REASONS.values(), 0))
    failed: int = 0
    histograms: dict[str, HistogramTotals] = dataclasses.field(
        default_factory=lambda: {name: HistogramTotals([0] * len(bounds)) for name, (_, bounds) in HISTOGRAMS.items()})


def _aggregates() -> dict:
    aggregates = {"requests": Count("id"), "prompt_tokens": Sum("prompt_tokens"),
                  "generation_tokens": Sum("completion_tokens")}
    for name, (column, bounds) in HISTOGRAMS.items():
        aggregates[f"{name}_count"] = Count(column)
        aggregates[f"{name}_sum"] = Sum(column)
        for index, bound in enumerate(bounds):
            # round(): 0.07 * 1000 is 70.00000000000001, which would move a bucket edge.
            aggregates[f"{name}_le{index}"] = Count(column, filter=Q(**{f"{column}__lte": round(bound * 1000, 6)}))
    return aggregates


def request_totals() -> dict[str, ModelTotals]:
    """Totals per served model (zero for enabled models without requests), in one grouped query.

    Only records of requests that reached a model count (their engine is set): a client that
    names a model that does not exist must not create series. Aliases count as their model.
    """
    canonical: dict[str, str] = {}
    enabled: list[str] = []
    for name, aliases, is_enabled in ServedModel.objects.values_list("name", "aliases", "enabled"):
        canonical.update(dict.fromkeys(aliases or [], name))
        canonical[name] = name
        if is_enabled:
            enabled.append(name)
    totals = {name: ModelTotals() for name in enabled}
    rows = (RequestRecord.objects.exclude(engine="").values("model_name", "finish_reason")
            .annotate(**_aggregates()).order_by())  # order_by(): the default ordering would split groups
    for row in rows:
        model = totals.setdefault(canonical.get(row["model_name"], row["model_name"]), ModelTotals())
        model.prompt_tokens += row["prompt_tokens"] or 0
        model.generation_tokens += row["generation_tokens"] or 0
        reason = FINISHED_REASONS.get(row["finish_reason"])
        if reason is None:
            model.failed += row["requests"]
            continue
        model.finished[reason] += row["requests"]
        for name, (_, bounds) in HISTOGRAMS.items():
            histogram = model.histograms[name]
            histogram.count += row[f"{name}_count"]
            histogram.sum_seconds += (row[f"{name}_sum"] or 0) / 1000
            for index in range(len(bounds)):
                histogram.buckets[index] += row[f"{name}_le{index}"]
    return totals
