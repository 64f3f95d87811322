"""Admin for served models: the typed model form, the live state of its copies, and the deployment actions."""

from __future__ import annotations

from collections import Counter
from typing import ClassVar

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseNotAllowed, JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from engines.capabilities import CAPABILITIES, FEATURES

from ..engine_choice import engine_choice
from ..forms import DEFAULT_PARAM_FIELDS, ENGINES_WITH_OPTIONS, ServedModelForm, auto_engines, default_field_name
from ..forms_engine_options import engine_field_names
from ..models import ServedModel
from ..selectors import replicas_of
from ..services.deployments import served_model_load, served_model_reload, served_model_unload
from .replica_table import replica_rows, replica_table

# The model page's buttons, each also a changelist action.
DEPLOYMENT_ACTIONS = ("load", "unload", "reload")


def _engine_fieldsets() -> list[tuple[str, dict]]:
    """One fieldset per engine; the page's script shows the chosen engine's only."""
    return [
        (
            f"{engine} options",
            {
                "fields": engine_field_names(engine),
                "classes": ("engine-options", f"engine-{engine}"),
                "description": "Blank: the engine's default.",
            },
        )
        for engine in ENGINES_WITH_OPTIONS
    ]


@admin.register(ServedModel)
class ServedModelAdmin(admin.ModelAdmin):
    form = ServedModelForm
    change_form_template = "admin/models_registry/servedmodel/change_form.html"
    list_display = (
        "name",
        "task",
        "engine",
        "resolved_engine",
        "context_length",
        "deployment",
        "copies_summary",
        "enabled",
        "updated_at",
    )
    list_filter = ("task", "engine", "enabled")
    search_fields = ("name", "source", "description")
    readonly_fields: ClassVar[tuple[str, ...]] = (
        "resolved_engine",
        "capability_table",
        "live_replicas",
        "revision",
        "created_at",
        "updated_at",
    )
    actions = ("load_models", "unload_models", "reload_models")

    def get_fieldsets(self, request, obj=None):
        deployment = ["replicas", "placement_label", "placement_host", "keep_alive_seconds", "slots"]
        if obj is not None:
            deployment += ["revision", "live_replicas"]
        return (
            (None, {"fields": ("name", "task", "aliases", "enabled", "description", "owned_by")}),
            ("Engine", {"fields": ("engine", "resolved_engine", "source", "context_length", "capability_table")}),
            *_engine_fieldsets(),
            ("Other engine options", {"fields": ("engine_options",)}),
            ("Deployment", {"fields": deployment}),
            (
                "Default parameters",
                {
                    "fields": [*(default_field_name(k) for k in DEFAULT_PARAM_FIELDS), "default_params"],
                    "description": "Used when a request sets none. Blank: the API's default.",
                },
            ),
            ("Timestamps", {"fields": ("created_at", "updated_at")}),
        )

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<int:pk>/replicas/", view(self.replicas_view), name="models_registry_servedmodel_replicas"),
            path(
                "<int:pk>/deployment/<str:action>/",
                view(self.deployment_view),
                name="models_registry_servedmodel_deployment",
            ),
            *super().get_urls(),
        ]

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        extra_context = {**(extra_context or {}), "auto_engines": auto_engines()}
        if object_id is not None:
            extra_context["deployment_actions"] = [
                (action, reverse("admin:models_registry_servedmodel_deployment", args=[object_id, action]))
                for action in DEPLOYMENT_ACTIONS
            ]
        return super().changeform_view(request, object_id, form_url, extra_context)

    @admin.display(description="Resolves to")
    def resolved_engine(self, obj):
        if obj is None or not obj.engine:
            return "-"
        if obj.engine != "auto":
            return obj.engine
        engine, reason = engine_choice(obj)
        return f"{engine} ({reason})"

    @admin.display(description="Deployment")
    def deployment(self, obj):
        if obj.on_demand:
            return "on demand"
        return f"{obj.replicas} replica{'s' if obj.replicas != 1 else ''}"

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("copies")

    @admin.display(description="Copies")
    def copies_summary(self, obj):
        """How many copies are in each state, e.g. "2 ready, 1 loading"; "-" when none is loaded."""
        counts = Counter(copy.state for copy in obj.copies.all())
        return ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "-"

    @admin.display(description="Capabilities")
    def capability_table(self, obj):
        """engines.capabilities as a table; the row of this model's engine is bold."""
        current = engine_choice(obj)[0] if obj is not None and obj.engine else None
        header = format_html_join("", "<th>{}</th>", ((f,) for f in FEATURES))
        rows = format_html_join(
            "",
            "<tr{}><th>{}</th>{}</tr>",
            (
                (
                    mark_safe(' style="font-weight:bold"') if engine == current else "",
                    engine,
                    format_html_join("", "<td>{}</td>", (("yes" if f in features else "no",) for f in FEATURES)),
                )
                for engine, features in CAPABILITIES.items()
            ),
        )
        return format_html('<table id="capability-table"><tr><th>engine</th>{}</tr>{}</table>', header, rows)

    @admin.display(description="Copies (live)")
    def live_replicas(self, obj):
        if obj is None or obj.pk is None:
            return "-"
        url = reverse("admin:models_registry_servedmodel_replicas", args=[obj.pk])
        return format_html('<div id="replica-panel" data-url="{}">{}</div>', url, replica_table(replicas_of(model=obj)))

    def replicas_view(self, request, pk):
        """GET: the model's copies as JSON (rows, and the table's HTML), polled by its page."""
        model = get_object_or_404(ServedModel, pk=pk)
        if not self.has_view_or_change_permission(request, model):
            raise PermissionDenied
        replicas = replicas_of(model=model)
        response = JsonResponse(
            {"model": model.name, "replicas": replica_rows(replicas), "html": str(replica_table(replicas))}
        )
        response["Cache-Control"] = "no-store"
        return response

    def deployment_view(self, request, pk, action):
        """POST: the model page's load, unload and reload buttons."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if action not in DEPLOYMENT_ACTIONS:
            raise Http404(f"No deployment action {action!r}.")
        model = get_object_or_404(ServedModel, pk=pk)
        if not self.has_change_permission(request, model):
            raise PermissionDenied
        self._deploy(request, model, action)
        return redirect(reverse("admin:models_registry_servedmodel_change", args=[model.pk]))

    def _deploy(self, request, model: ServedModel, action: str) -> None:
        """Run one deployment action on one model: the service, the admin log, a message."""
        if action == "load":
            served_model_load(model=model, seconds=settings.LOAD_TIMEOUT_SECONDS)
            if model.on_demand:
                text = f"Loading {model.name}: a host with room loads it, and keeps it for its keep-alive."
            else:
                text = f"{model.name} is deployed with {model.replicas} replica(s): its hosts keep it loaded."
            log = "Load"
        elif action == "unload":
            made_on_demand = served_model_unload(model=model)
            text = f"Unloading {model.name} from every host."
            if made_on_demand:
                text += " It is on demand now (replicas 0): the next request loads it again."
            log = "Unload" + (" (replicas set to 0: on demand)" if made_on_demand else "")
        else:
            revision = served_model_reload(model=model)
            text = f"Reloading {model.name} (revision {revision}): each copy is replaced once its new one is ready."
            log = f"Reload (revision {revision})"
        if not model.enabled:
            text += " It is disabled: no host loads it until it is enabled."
        self.log_change(request, model, log)
        self.message_user(request, text, messages.SUCCESS if model.enabled else messages.WARNING)

    def _deploy_each(self, request, queryset, action: str) -> None:
        if not self.has_change_permission(request):
            raise PermissionDenied
        for model in queryset:
            self._deploy(request, model, action)

    @admin.action(description="Load selected models", permissions=["change"])
    def load_models(self, request, queryset):
        self._deploy_each(request, queryset, "load")

    @admin.action(description="Unload selected models (they become on demand)", permissions=["change"])
    def unload_models(self, request, queryset):
        self._deploy_each(request, queryset, "unload")

    @admin.action(description="Reload selected models (rolling)", permissions=["change"])
    def reload_models(self, request, queryset):
        self._deploy_each(request, queryset, "reload")
