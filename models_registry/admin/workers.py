"""Admin for workers (engine hosts): what they reported, the copies they hold, and drain/resume."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseNotAllowed
from django.shortcuts import get_object_or_404, redirect
from django.template.defaultfilters import filesizeformat
from django.urls import path, reverse

from ..models import Replica, WorkerRegistration
from ..services.deployments import worker_drain, worker_resume


def capacity_text(capacity: dict) -> str:
    """A worker's reported capacity in human units, e.g. "memory 23.4 GB, budget 8.0 GB, at most 2 models"."""
    parts = []
    if capacity.get("memory_total_bytes"):
        parts.append(f"memory {filesizeformat(capacity['memory_total_bytes'])}")
    budget = capacity.get("memory_budget_bytes")
    parts.append(f"budget {filesizeformat(budget)}" if budget else "no memory budget")
    most = capacity.get("max_loaded_models")
    parts.append(f"at most {most} model{'s' if most != 1 else ''}" if most else "no model limit")
    gpus = capacity.get("gpus") or []
    if gpus:
        parts.append(
            "GPUs: "
            + ", ".join(
                f"{g.get('name', '?')} ({filesizeformat(g['memory_mb'] * 1024 * 1024)})"
                if g.get("memory_mb")
                else str(g.get("name", "?"))
                for g in gpus
            )
        )
    return ", ".join(parts)


class ReplicaInline(admin.TabularInline):
    """The copies the worker holds (it writes them itself)."""

    model = Replica
    fk_name = "worker"
    fields = ("model", "engine", "revision", "state", "error", "state_changed_at", "memory", "last_used_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name = "copy"
    verbose_name_plural = "copies"

    @admin.display(description="memory")
    def memory(self, obj):
        return "-" if obj.memory_bytes is None else filesizeformat(obj.memory_bytes)

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(WorkerRegistration)
class WorkerRegistrationAdmin(admin.ModelAdmin):
    """Read-only but for drain and resume: workers keep their own rows up to date."""

    list_display = (
        "worker_id",
        "host",
        "state",
        "drained",
        "labels_list",
        "capacity_summary",
        "models_list",
        "in_flight",
        "concurrency",
        "last_heartbeat",
        "started_at",
    )
    list_filter = ("state", "drained", "host")
    search_fields = ("worker_id", "host")
    inlines = (ReplicaInline,)
    actions = ("drain_workers", "resume_workers")
    fields = (
        "worker_id",
        "host",
        "pid",
        "state",
        "drained",
        "labels_list",
        "capacity_summary",
        "models_list",
        "in_flight",
        "concurrency",
        "error",
        "last_heartbeat",
        "started_at",
    )
    readonly_fields = ("labels_list", "capacity_summary", "models_list")

    @admin.display(description="Labels")
    def labels_list(self, obj):
        return ", ".join(obj.labels or []) or "-"

    @admin.display(description="Capacity")
    def capacity_summary(self, obj):
        return capacity_text(obj.capacity or {}) if obj.capacity else "-"

    @admin.display(description="Models")
    def models_list(self, obj):
        return ", ".join(obj.hosted_models or []) or "-"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_urls(self):
        worker_action = self.admin_site.admin_view(self.worker_action_view)
        route = path("<int:pk>/worker/<str:action>/", worker_action, name="models_registry_workerregistration_action")
        return [route, *super().get_urls()]

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        extra_context = dict(extra_context or {})
        if object_id is not None and self.has_drain_permission(request):
            worker = WorkerRegistration.objects.filter(pk=object_id).first()
            action = "resume" if worker is not None and worker.drained else "drain"
            url = reverse("admin:models_registry_workerregistration_action", args=[object_id, action])
            extra_context["worker_actions"] = [(action, url)]
        return super().changeform_view(request, object_id, form_url, extra_context)

    def worker_action_view(self, request, pk, action):
        """POST: the worker page's drain or resume button."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if action not in ("drain", "resume"):
            raise Http404(f"No worker action {action!r}.")
        if not self.has_drain_permission(request):
            raise PermissionDenied
        worker = get_object_or_404(WorkerRegistration, pk=pk)
        queryset = WorkerRegistration.objects.filter(pk=worker.pk)
        (self.drain_workers if action == "drain" else self.resume_workers)(request, queryset)
        return redirect(reverse("admin:models_registry_workerregistration_change", args=[worker.pk]))

    def has_drain_permission(self, request):
        """Drain and resume are the one change an operator makes to a worker."""
        return request.user.has_perm(f"{self.opts.app_label}.change_{self.opts.model_name}")

    @admin.action(description="Drain selected workers (no new jobs; copies move elsewhere)", permissions=["drain"])
    def drain_workers(self, request, queryset):
        for worker in queryset:
            worker_drain(worker=worker)
            self.log_change(request, worker, "Drained")
        self.message_user(
            request,
            f"Draining {queryset.count()} worker(s): they take no new jobs, and their copies are placed elsewhere.",
            messages.SUCCESS,
        )

    @admin.action(description="Resume selected workers", permissions=["drain"])
    def resume_workers(self, request, queryset):
        for worker in queryset:
            worker_resume(worker=worker)
            self.log_change(request, worker, "Resumed")
        self.message_user(request, f"Resumed {queryset.count()} worker(s): they take jobs again.", messages.SUCCESS)
