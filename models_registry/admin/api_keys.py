"""Admin for API keys: issued, rotated and revoked through the services."""

from typing import ClassVar

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from ..models import ApiKey
from ..services.api_keys import api_key_assign_secret, api_key_revoke, api_key_rotate

GRACE_CHOICES = [
    (0, "none: the old key stops working now"),
    (3600, "1 hour"),
    (86400, "1 day"),
    (7 * 86400, "7 days"),
    (30 * 86400, "30 days"),
]


class RotateForm(forms.Form):
    grace_seconds = forms.TypedChoiceField(
        label="Keep the old key working for", choices=GRACE_CHOICES, coerce=int, initial=86400
    )


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "prefix",
        "owner",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked",
        "rpm_limit",
        "tpm_limit",
        "concurrency_limit",
    )
    list_filter = ("revoked", "created_at", "expires_at", "allowed_models")
    search_fields = ("name", "prefix", "owner__username")
    readonly_fields: ClassVar[tuple[str, ...]] = (
        "prefix",
        "created_at",
        "last_used_at",
        "rotate_link",
    )  # monitoring adds one
    filter_horizontal = ("allowed_models",)
    actions = ("revoke_keys",)

    def get_fields(self, request, obj=None):
        editable = ["name", "owner", "expires_at", "allowed_models", "rpm_limit", "tpm_limit", "concurrency_limit"]
        if obj is None:
            return editable
        return editable + ["revoked", "prefix", "created_at", "last_used_at", "rotate_link"]

    def get_urls(self):
        rotate = path(
            "<int:pk>/rotate/", self.admin_site.admin_view(self.rotate_view), name="models_registry_apikey_rotate"
        )
        return [rotate, *super().get_urls()]

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
        else:
            # Kept only on this request object, to render once in response_add.
            request._issued_plaintext = api_key_assign_secret(key=obj)

    def response_add(self, request, obj, post_url_continue=None):
        plaintext = getattr(request, "_issued_plaintext", None)
        if plaintext is None:
            return super().response_add(request, obj, post_url_continue)
        return self._issued_page(request, obj, plaintext, "API key issued")

    def _issued_page(self, request, key, plaintext, title):
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "key": key,
            "plaintext": plaintext,
            "title": title,
        }
        response = TemplateResponse(request, "admin/models_registry/apikey/issued.html", context)
        response["Cache-Control"] = "no-store"
        return response

    @admin.display(description="Rotate")
    def rotate_link(self, obj):
        if obj is None or obj.pk is None or not obj.is_active():
            return "-"
        return format_html(
            '<a class="button" id="rotate-api-key" href="{}">Rotate…</a> '
            "issues a new key with the same settings; you choose how long the old one keeps working",
            reverse("admin:models_registry_apikey_rotate", args=[obj.pk]),
        )

    def rotate_view(self, request, pk):
        key = get_object_or_404(ApiKey, pk=pk)
        if not self.has_change_permission(request, key):
            raise PermissionDenied
        change_url = reverse("admin:models_registry_apikey_change", args=[key.pk])
        if not key.is_active():
            self.message_user(request, "A revoked or expired key cannot be rotated.", messages.ERROR)
            return redirect(change_url)
        form = RotateForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            grace = form.cleaned_data["grace_seconds"]
            issued = api_key_rotate(key=key, grace_seconds=grace)
            # Rotation always leaves the old key an expiry (the grace period's end at the latest).
            expires = key.expires_at.isoformat() if key.expires_at is not None else "never"
            self.log_change(request, key, f"Rotated; replaced by {issued.key.prefix}, old key expires {expires}")
            self.log_addition(request, issued.key, f"Issued by rotating {key.prefix}")
            return self._issued_page(request, issued.key, issued.plaintext, "API key rotated")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "key": key,
            "form": form,
            "title": f"Rotate API key {key}",
        }
        return TemplateResponse(request, "admin/models_registry/apikey/rotate.html", context)

    @admin.action(description="Revoke selected keys")
    def revoke_keys(self, request, queryset):
        for key in queryset:
            api_key_revoke(key=key)
            self.log_change(request, key, "Revoked")
        self.message_user(request, f"Revoked {queryset.count()} key(s).", messages.SUCCESS)
