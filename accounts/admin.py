"""Accounts in the admin: the audit trail, staff tokens, request traces, and
the audited base of the tenant and key pages (registered in gateway.admin,
since those pages show billing too)."""

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from accounts.admin_filters import TenantFilter
from accounts.audit import audit_by, changes_between
from accounts.models import AuditEntry, RequestTrace, StaffToken
from accounts.staff_tokens import staff_token_revoke
from gateway.kernel.admin import ReadOnlyAdmin


class AuditedAdmin(admin.ModelAdmin):
    """Admin's writes leave the audit entries the management API's do: who
    changed which fields from what to what (accounts.audit scrubs secrets).
    (The budget inlines are read-only: budgets change on their own page.)"""

    audit_name = ""  # the API's name for the object: "tenant" in "tenant.update"

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        _audit_form(request, self.audit_name or obj._meta.model_name, obj, form, change)

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        audit_by(request, f"{self.audit_name or obj._meta.model_name}.delete", obj, {"repr": str(obj)})
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        for obj in queryset:
            audit_by(request, f"{self.audit_name or obj._meta.model_name}.delete", obj, {"repr": str(obj)})
        super().delete_queryset(request, queryset)


def _audit_form(request: HttpRequest, name: str, obj: Any, form: Any, change: bool) -> None:
    fields = [field for field in form.changed_data if hasattr(obj, field)]
    if change:
        changes = changes_between({f: form.initial.get(f) for f in fields}, {f: getattr(obj, f) for f in fields})
        if changes:
            audit_by(request, f"{name}.update", obj, changes)
    else:
        audit_by(request, f"{name}.create", obj, {field: getattr(obj, field) for field in fields})


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    """Read-only: an audit trail that staff could edit would prove nothing."""

    list_display = ["at", "actor", "action", "object_type", "object_id", "object_repr"]
    list_filter = ["action", "object_type"]
    search_fields = ["actor", "object_id", "object_repr", "request_id"]
    date_hierarchy = "at"


@admin.register(StaffToken)
class StaffTokenAdmin(admin.ModelAdmin):
    """Tokens are issued with `manage.py staff_token_create USERNAME` (shown once); here they are revoked."""

    list_display = ["prefix", "name", "user", "created_at", "revoked_at"]
    list_filter = ["revoked_at"]
    list_select_related = ["user"]
    readonly_fields = ["user", "name", "prefix", "created_at", "revoked_at"]
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("accounts.delete_stafftoken")

    @admin.action(description="Revoke selected tokens", permissions=["revoke"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[StaffToken]) -> None:
        for token in queryset:
            staff_token_revoke(token=token)
        self.message_user(request, f"Revoked {queryset.count()} token(s).")


@admin.register(RequestTrace)
class RequestTraceAdmin(ReadOnlyAdmin):
    """Read-only: traces are evidence of what was sent and answered.
    Deleting is left to retention (TRACE_RETENTION_DAYS)."""

    list_display = [
        "started_at",
        "request_id",
        "key_prefix",
        "model",
        "endpoint",
        "status",
        "stream",
        "latency_ms",
        "truncated",
    ]
    list_filter = ["status", "stream", "endpoint", TenantFilter]
    search_fields = ["request_id", "key_prefix", "model"]
    date_hierarchy = "started_at"
    readonly_fields = ["side_by_side"]

    @admin.display(description="read")
    def side_by_side(self, obj: RequestTrace) -> str:
        # The request explorer's page (gateway.explorer), named by URL, not imported: it is a floor up.
        url = reverse("gateway_request_trace", args=[obj.request_id])
        return format_html('<a href="{}">Prompt and answer, side by side</a>', url)
