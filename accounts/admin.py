from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.models import ApiKey, Tenant
from accounts.services import api_key_issue, api_key_revoke


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "is_active", "is_prepaid", "created_at"]
    list_filter = ["is_active", "is_prepaid"]
    search_fields = ["slug", "name"]


class ApiKeyAddForm(forms.ModelForm):
    class Meta:
        model = ApiKey
        fields = ["tenant", "name", "allowed_models", "tags", "expires_at"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["prefix", "name", "tenant", "expires_at", "revoked_at", "created_at"]
    list_filter = ["revoked_at", "tenant"]
    list_select_related = ["tenant"]
    search_fields = ["prefix", "name", "tenant__slug"]
    # The tenant is fixed once issued: usage, budgets and rollups hang on it.
    readonly_fields = ["tenant", "prefix", "created_at", "revoked_at"]
    fields = ["tenant", "name", "prefix", "allowed_models", "tags", "expires_at", "revoked_at", "created_at"]
    actions = ["revoke"]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = ApiKeyAddForm
            kwargs["fields"] = ApiKeyAddForm.Meta.fields
        return super().get_form(request, obj, change=change, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.readonly_fields if obj is not None else []

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.fields if obj is not None else ApiKeyAddForm.Meta.fields

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        plaintext, issued = api_key_issue(
            tenant=obj.tenant,
            name=obj.name,
            allowed_models=obj.allowed_models,
            expires_at=obj.expires_at,
            tags=obj.tags or (),
        )
        obj.pk = issued.pk
        obj.prefix, obj.digest = issued.prefix, issued.digest
        messages.warning(request, f"New key (shown once, copy it now): {plaintext}")

    @admin.action(description="Revoke selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for api_key in queryset:
            api_key_revoke(api_key=api_key)
        self.message_user(request, f"Revoked {queryset.count()} key(s).")
