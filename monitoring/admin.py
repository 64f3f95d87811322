from django.contrib import admin

from .models import RequestRecord


@admin.register(RequestRecord)
class RequestRecordAdmin(admin.ModelAdmin):
    """Read-only: records are written only by the request path."""

    list_display = ("created_at", "model_name", "engine", "worker", "api_key", "endpoint", "stream", "status_code",
                    "finish_reason", "prompt_tokens", "completion_tokens", "queue_wait_ms", "ttft_ms", "duration_ms",
                    "tokens_per_second")
    list_filter = ("status_code", "finish_reason", "engine", "worker", "endpoint", "stream", "model_name", "created_at")
    search_fields = ("request_id", "model_name", "api_key__name", "api_key__prefix", "error_type")
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
