"""The admin's request dashboard: charts from aggregated request records, and every host's latest sample."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from .charts import line_chart
from .dashboard import GROUPS, METRICS, WINDOWS, request_dashboard
from .host_samples import process_summary

GIB = 1024**3


def _host_rows(summaries: list[dict]) -> list[dict]:
    rows = []
    for summary in summaries:
        latest = summary.get("latest") or {}

        def gib(field: str) -> str:
            value = latest.get(field)  # noqa: B023 - gib is called within this iteration only
            return "—" if value is None else f"{value / GIB:.1f}"

        gpu = latest.get("gpu_count")
        rows.append(
            {
                "host": summary["host"],
                "pid": summary["pid"],
                "role": summary.get("role") or "",
                "name": summary.get("name") or "",
                "cpu_percent": latest.get("cpu_percent"),
                "load_1m": latest.get("load_1m"),
                "memory": f"{gib('memory_used_bytes')} / {gib('memory_total_bytes')} GiB ({latest.get('memory_percent')}%)",
                "disk": f"{gib('disk_used_bytes')} / {gib('disk_total_bytes')} GiB ({latest.get('disk_percent')}%)",
                "gpu": "none"
                if not gpu
                else (
                    f"{gpu} × {gib('gpu_memory_used_bytes')} / {gib('gpu_memory_total_bytes')}"
                    f" GiB, {latest.get('gpu_utilization_percent')}% busy"
                ),
            }
        )
    return rows


def _this_process() -> list[dict]:
    return [process_summary()]


def dashboard_view(request: HttpRequest, hosts_status: Callable[[], list[dict]] = _this_process) -> HttpResponse:
    """GET /admin/monitoring/dashboard/?window=hour|day|week&group=model|key|worker|endpoint (staff only via admin_view).

    `hosts_status` lists the processes to show; the project's URLs pass serving's, which
    knows every process of a distributed deployment.
    """
    window = request.GET.get("window", "hour")
    window = window if window in WINDOWS else "hour"
    group_by = request.GET.get("group", "model")
    group_by = group_by if group_by in GROUPS else "model"
    data = request_dashboard(window=window, group_by=group_by)
    charts = [
        line_chart(title=title, unit=unit, buckets=data.buckets, series=data.series[metric])
        for metric, title, unit in METRICS
    ]
    context = {
        **admin.site.each_context(request),
        "title": "Request dashboard",
        "window": window,
        "windows": list(WINDOWS),
        "group_by": group_by,
        "groups": list(GROUPS),
        "charts": charts,
        "totals": data.totals,
        "hosts": _host_rows(hosts_status()),
    }
    return TemplateResponse(request, "admin/monitoring/dashboard.html", context)
