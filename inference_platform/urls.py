from django.contrib import admin
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt
from django.views.generic import RedirectView

from api.errors import allow_methods
from monitoring.admin_views import dashboard_view
from serving.hosts import hosts_status

from .metrics import metrics_view

urlpatterns = [
    # Before admin.site.urls, whose catch-all would answer 404; admin_view makes it staff-only.
    # The dashboard lists every process serving knows of, not only this one.
    path(
        "admin/monitoring/dashboard/",
        admin.site.admin_view(dashboard_view),
        {"hosts_status": hosts_status},
        name="monitoring_dashboard",
    ),
    path("admin/", admin.site.urls),
    # Without this, CommonMiddleware's APPEND_SLASH answers POST /admin with a 500 under DEBUG.
    path("admin", csrf_exempt(RedirectView.as_view(pattern_name="admin:index", permanent=True))),
    # Prometheus; outside /v1, as vLLM has it. GET only: POST is a 405, not a CSRF 403.
    path("metrics", allow_methods("GET")(metrics_view), name="metrics"),
    path("", include("api.urls")),
]

handler400 = "api.errors.bad_request_view"
handler403 = "api.errors.permission_denied_view"
handler404 = "api.errors.not_found_view"
handler500 = "api.errors.server_error_view"
