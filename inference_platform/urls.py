from django.contrib import admin
from django.urls import include, path

from monitoring.views import metrics_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("metrics", metrics_view, name="metrics"),  # Prometheus; outside /v1, as vLLM has it
    path("", include("api.urls")),
]

handler404 = "api.exceptions.not_found_view"
handler500 = "api.exceptions.server_error_view"
