from urllib.parse import urlencode

from django.contrib import admin
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from models_registry.admin import ApiKeyAdmin, ServedModelAdmin
from models_registry.models import ApiKey, ServedModel

from .model_traffic import LAST_REQUESTS, model_traffic
from .models import RequestRecord
from .selectors import api_key_usage_by_day

# The admin index shows a link to the request dashboard (templates/admin/monitoring_index.html).
admin.site.index_template = "admin/monitoring_index.html"


class StatusClassFilter(admin.SimpleListFilter):
    """2xx / 4xx / 5xx at a glance; the exact codes are in the status code filter."""

    title = "status class"
    parameter_name = "status_class"

    def lookups(self, request, model_admin):
        return [("2xx", "2xx success"), ("4xx", "4xx client error"), ("5xx", "5xx server error")]

    def queryset(self, request, queryset):
        value = self.value()
        if value in ("2xx", "4xx", "5xx"):
            low = int(value[0]) * 100
            return queryset.filter(status_code__gte=low, status_code__lt=low + 100)
        return queryset


def _rounded(value: float | None, digits: int = 0) -> str | None:
    return None if value is None else f"{value:,.{digits}f}"


@admin.register(RequestRecord)
class RequestRecordAdmin(admin.ModelAdmin):
    """Read-only: records are written only by the request path."""

    list_display = (
        "created_at",
        "model_name",
        "engine",
        "worker",
        "api_key",
        "endpoint",
        "stream",
        "status_code",
        "finish_reason",
        "prompt_tokens",
        "cached_tokens",
        "completion_tokens",
        "queue_wait",
        "ttft",
        "duration",
        "tokens_per_second_rounded",
    )
    list_filter = (
        "model_name",
        "api_key",
        StatusClassFilter,
        "status_code",
        "finish_reason",
        "worker",
        "engine",
        "endpoint",
        "stream",
        "created_at",
    )
    list_select_related = ("api_key",)
    search_fields = ("request_id", "model_name", "api_key__name", "api_key__prefix", "error_type")
    date_hierarchy = "created_at"

    # Milliseconds and rates rounded for reading; the change page shows the stored values.
    @admin.display(description="queue wait ms", ordering="queue_wait_ms", empty_value="-")
    def queue_wait(self, record):
        return _rounded(record.queue_wait_ms)

    @admin.display(description="TTFT ms", ordering="ttft_ms", empty_value="-")
    def ttft(self, record):
        return _rounded(record.ttft_ms)

    @admin.display(description="duration ms", ordering="duration_ms")
    def duration(self, record):
        return _rounded(record.duration_ms)

    @admin.display(description="tokens/s", ordering="tokens_per_second", empty_value="-")
    def tokens_per_second_rounded(self, record):
        return _rounded(record.tokens_per_second, digits=1)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


# A key's page shows its usage, which monitoring records: the registry's admin for keys, plus
# that table, is registered here so models_registry never reads monitoring.
admin.site.unregister(ApiKey)


@admin.register(ApiKey)
class ApiKeyWithUsageAdmin(ApiKeyAdmin):
    readonly_fields = (*ApiKeyAdmin.readonly_fields, "usage_table")

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        return fields if obj is None else [*fields, "usage_table"]

    @admin.display(description="Usage by day (last 30 days, UTC)")
    def usage_table(self, obj):
        if obj is None or obj.pk is None:
            return "-"
        rows = api_key_usage_by_day(key=obj)
        if not rows:
            return "No requests yet."
        body = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (r["day"].isoformat(), r["requests"], r["prompt_tokens"], r["completion_tokens"], r["total_tokens"])
                for r in rows
            ),
        )
        return format_html(
            '<table id="usage-by-day"><tr><th>day</th><th>requests</th><th>prompt tokens</th>'
            "<th>completion tokens</th><th>total tokens</th></tr>{}</table>",
            body,
        )


# A model's page shows its recent traffic, from the records: registered here for the same reason.
admin.site.unregister(ServedModel)


@admin.register(ServedModel)
class ServedModelWithTrafficAdmin(ServedModelAdmin):
    readonly_fields = (*ServedModelAdmin.readonly_fields, "recent_traffic")

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None:
            return fieldsets
        traffic = ("Recent traffic", {"fields": ("recent_traffic",)})
        return (*fieldsets[:-1], traffic, fieldsets[-1])  # before the timestamps

    @admin.display(description="Last hour")
    def recent_traffic(self, obj):
        if obj is None or obj.pk is None:
            return "-"
        traffic = model_traffic(model_name=obj.name)
        records = reverse("admin:monitoring_requestrecord_changelist") + "?" + urlencode({"model_name": obj.name})
        summary = format_html(
            '<p id="model-traffic-summary">{} requests, {} errors; median TTFT {} ms, median {} tokens/s. '
            '<a href="{}">All its requests</a></p>',
            traffic.requests,
            traffic.errors,
            _rounded(traffic.median_ttft_ms) or "-",
            _rounded(traffic.median_tokens_per_second, digits=1) or "-",
            records,
        )
        if not traffic.last:
            return format_html("{}<p>No requests yet.</p>", summary)
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    timezone.localtime(r.created_at).strftime("%Y-%m-%d %H:%M:%S"),
                    r.endpoint,
                    "yes" if r.stream else "no",
                    r.status_code,
                    _rounded(r.ttft_ms) or "-",
                    _rounded(r.duration_ms),
                    r.completion_tokens if r.completion_tokens is not None else "-",
                    _rounded(r.tokens_per_second, digits=1) or "-",
                    r.worker or "-",
                )
                for r in traffic.last
            ),
        )
        return format_html(
            '{}<table id="model-traffic"><caption>Last {} requests</caption><thead><tr><th>at</th><th>endpoint</th>'
            "<th>stream</th><th>status</th><th>TTFT ms</th><th>duration ms</th><th>completion tokens</th>"
            "<th>tokens/s</th><th>worker</th></tr></thead><tbody>{}</tbody></table>",
            summary,
            LAST_REQUESTS,
            rows,
        )
