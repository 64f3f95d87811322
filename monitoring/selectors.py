"""Reads for /metrics: the running totals (monitoring.metric_totals), per served model.

Every web and worker process adds to the same totals table as it records requests, so any
process reads one consistent view without shared metrics state, and a scrape reads a few rows
per model, however many records there are.
"""

from __future__ import annotations

from models_registry.models import ServedModel

from .metric_totals import ModelTotals
from .models import MetricTotal


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
        totals.setdefault(canonical.get(model_name, model_name), ModelTotals()).add(series, value)
    return totals
