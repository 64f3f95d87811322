"""Reads for /metrics: the running totals (monitoring.metric_totals), per served model.

Every web and worker process adds to the same totals table as it records requests, so any
process reads one consistent view without shared metrics state, and a scrape reads a few rows
per model, however many records there are.
"""

from __future__ import annotations

import dataclasses

from models_registry.models import ServedModel

from .metric_totals import FAILED, FINISHED_PREFIX, FINISHED_REASONS, GENERATION_TOKENS, HISTOGRAMS, PROMPT_TOKENS
from .models import MetricTotal


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


def _add(model: ModelTotals, series: str, value: float) -> None:
    if series == PROMPT_TOKENS:
        model.prompt_tokens += int(value)
    elif series == GENERATION_TOKENS:
        model.generation_tokens += int(value)
    elif series == FAILED:
        model.failed += int(value)
    elif series.startswith(FINISHED_PREFIX):
        reason = series.removeprefix(FINISHED_PREFIX)
        model.finished[reason] = model.finished.get(reason, 0) + int(value)
    else:
        name, _, part = series.partition(":")
        histogram = model.histograms.get(name)
        if histogram is None:
            return  # a series this version does not export
        if part == "count":
            histogram.count += int(value)
        elif part == "sum":
            histogram.sum_seconds += value
        elif part.startswith("bucket:"):
            index = int(part.removeprefix("bucket:"))
            # Stored per bucket; exported cumulatively (`le`): this bucket and every one above it.
            for above in range(index, len(histogram.buckets)):
                histogram.buckets[above] += int(value)


def request_totals() -> dict[str, ModelTotals]:
    """Totals per served model (zero for enabled models without requests). Aliases count as their model."""
    canonical: dict[str, str] = {}
    enabled: list[str] = []
    for name, aliases, is_enabled in ServedModel.objects.values_list("name", "aliases", "enabled"):
        canonical.update(dict.fromkeys(aliases or [], name))
        canonical[name] = name
        if is_enabled:
            enabled.append(name)
    totals = {name: ModelTotals() for name in enabled}
    for model_name, series, value in MetricTotal.objects.values_list("model_name", "series", "value"):
        _add(totals.setdefault(canonical.get(model_name, model_name), ModelTotals()), series, value)
    return totals
