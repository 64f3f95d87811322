from django.contrib import admin
from django.urls import include, path

from monitoring.admin_views import dashboard_view
from monitoring.views import metrics_view

urlpatterns = [
    # Before admin.site.urls, whose catch-all would answer 404; admin_view makes it staff-only.
    path("admin/monitoring/dashboard/", admin.site.admin_view(dashboard_view), name="monitoring_dashboard"),
    path("admin/", admin.site.urls),
    path("metrics", metrics_view, name="metrics"),  # Prometheus; outside /v1, as vLLM has it
    path("", include("api.urls")),
]

handler400 = "api.exceptions.bad_request_view"
handler403 = "api.exceptions.permission_denied_view"
handler404 = "api.exceptions.not_found_view"
handler500 = "api.exceptions.server_error_view"
