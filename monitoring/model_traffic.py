"""A served model's recent traffic, for its admin page: counts and medians computed by the database."""

from __future__ import annotations

import dataclasses
import datetime as dt

from django.db.models import QuerySet
from django.utils import timezone

from .models import RequestRecord

# What the model page shows: the last hour, and the newest few requests.
TRAFFIC_WINDOW = dt.timedelta(hours=1)
LAST_REQUESTS = 10


@dataclasses.dataclass(frozen=True)
class ModelTraffic:
    requests: int
    errors: int  # status >= 400, as the dashboard's error rate counts them
    median_ttft_ms: float | None
    median_tokens_per_second: float | None
    last: list[RequestRecord]


def _median(records: QuerySet[RequestRecord], column: str) -> float | None:
    """The median of a column (the mean of the two middle values for an even count), read as two rows."""
    present = records.filter(**{f"{column}__isnull": False}).order_by(column)
    count = present.count()
    if not count:
        return None
    low, high = (count - 1) // 2, count // 2
    values = list(present.values_list(column, flat=True)[low : high + 1])
    return sum(values) / len(values)


def model_traffic(*, model_name: str, now: dt.datetime | None = None) -> ModelTraffic:
    """Requests for `model_name` (aliases are recorded as the model) in the last TRAFFIC_WINDOW."""
    since = (now or timezone.now()) - TRAFFIC_WINDOW
    recent = RequestRecord.objects.filter(model_name=model_name, created_at__gte=since)
    return ModelTraffic(
        requests=recent.count(),
        errors=recent.filter(status_code__gte=400).count(),
        median_ttft_ms=_median(recent, "ttft_ms"),
        median_tokens_per_second=_median(recent, "tokens_per_second"),
        last=list(RequestRecord.objects.filter(model_name=model_name).order_by("-created_at", "-pk")[:LAST_REQUESTS]),
    )
