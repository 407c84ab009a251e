from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from proxy.models import Provider, Route


class ProviderForm(forms.ModelForm):
    base_url = forms.URLField(max_length=500, assume_scheme="https", help_text="For example https://api.openai.com/v1")
    api_key = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Stored encrypted and never shown again. Leave empty to keep the stored one.",
    )
    clear_api_key = forms.BooleanField(required=False, help_text="Remove the stored credential.")

    class Meta:
        model = Provider
        fields = ["name", "kind", "base_url", "api_key_env", "is_active"]


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    form = ProviderForm
    list_display = ["name", "kind", "base_url", "credential", "is_active"]
    list_filter = ["kind", "is_active"]
    search_fields = ["name", "base_url"]

    @admin.display(description="Credential")
    def credential(self, obj: Provider) -> str:
        if obj.api_key_env:
            return f"env ${obj.api_key_env}"
        return "stored (encrypted)" if obj.has_stored_key else "none"

    def save_model(self, request: HttpRequest, obj: Provider, form: Any, change: bool) -> None:
        if form.cleaned_data.get("clear_api_key"):
            obj.set_api_key("")
        elif form.cleaned_data.get("api_key"):
            obj.set_api_key(form.cleaned_data["api_key"])
        super().save_model(request, obj, form, change)


@admin.register(Route)
class RouteAdmin(admin.ModelAdmin):
    list_display = ["model", "provider", "upstream_model", "is_active"]
    list_filter = ["provider", "is_active"]
    list_select_related = ["provider"]
    search_fields = ["model", "upstream_model"]
