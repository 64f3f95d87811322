"""GET /metrics for Prometheus, guarded by METRICS_ACCESS.

Put together here, at the top: monitoring has the request totals and the exposition format,
serving the load of every host that serves a model, and api the bearer header's parsing.
"""

from __future__ import annotations

import hmac
import logging

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from api.authentication import bearer_token
from monitoring.prometheus import CONTENT_TYPE, exposition
from monitoring.selectors import request_totals
from serving import dispatch
from serving.errors import ServiceUnavailable

logger = logging.getLogger(__name__)


@require_GET
async def metrics_view(request: HttpRequest) -> HttpResponse:
    """Request metrics of every process, in Prometheus text format."""
    refusal = await _refusal(request)
    if refusal is not None:
        return refusal
    totals = await sync_to_async(request_totals)()
    try:
        load = await dispatch.request_load(list(totals))
    except ServiceUnavailable:
        load = None  # Redis is down: leave the two gauges out rather than fail the scrape
    return HttpResponse(exposition(totals, load), content_type=CONTENT_TYPE)


async def _refusal(request: HttpRequest) -> HttpResponse | None:
    access = settings.METRICS_ACCESS
    if access == "open":
        return None
    if access == "staff":
        user = await request.auser()
        if user.is_active and user.is_staff:
            return None
        return _plain("Metrics need a staff login (METRICS_ACCESS=staff).", 403)
    if not settings.METRICS_TOKEN:
        return _plain("METRICS_ACCESS=token, but no METRICS_TOKEN is set.", 403)
    token = bearer_token(request.headers.get("Authorization", ""))
    if token and hmac.compare_digest(token.encode(), settings.METRICS_TOKEN.encode()):
        return None
    response = _plain("Metrics need `Authorization: Bearer <METRICS_TOKEN>`.", 401)
    response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


def _plain(message: str, status: int) -> HttpResponse:
    return HttpResponse(message + "\n", status=status, content_type="text/plain; charset=utf-8")
