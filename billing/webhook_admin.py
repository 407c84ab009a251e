"""Webhooks in the admin (imported by billing.admin): the webhooks, edited
as `webhook_create` does, with a secret that is written and never shown
back; and their deliveries, read-only, with each receiver's answer."""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.admin import AuditedAdmin
from billing.models import Webhook, WebhookDelivery
from billing.webhook_delivery import delivery_retry_now
from billing.webhooks import EVENTS, webhook_events_parse, webhook_secret_set, webhook_url_check
from gateway.kernel.admin import ReadOnlyAdmin


class WebhookForm(forms.ModelForm):
    # Checked by webhook_url_check, as webhook_create checks it (one message for both).
    url = forms.CharField(max_length=500, widget=forms.URLInput(attrs={"size": 80}))
    events = forms.MultipleChoiceField(
        choices=[(name, f"{name}: {text}") for name, text in EVENTS.items()], widget=forms.CheckboxSelectMultiple
    )
    secret = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="The HMAC key receivers check signatures with. Stored encrypted, never shown; "
        "leave empty to keep the current one.",
    )

    class Meta:
        model = Webhook
        fields = ["url", "events", "tenant", "enabled", "slack"]

    def clean_url(self) -> str:
        try:
            return webhook_url_check(self.cleaned_data["url"])
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_events(self) -> list[str]:
        try:
            return webhook_events_parse(self.cleaned_data["events"])
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_secret(self) -> str:
        secret: str = self.cleaned_data.get("secret") or ""
        if not secret and not self.instance.secret_encrypted:
            raise forms.ValidationError("A new webhook needs a secret.")
        return secret


@admin.register(Webhook)
class WebhookAdmin(AuditedAdmin):
    form = WebhookForm
    audit_name = "webhook"
    list_display = ["url", "tenant", "event_list", "enabled", "slack", "secret_state"]
    list_filter = ["enabled", "slack"]
    search_fields = ["url", "tenant__slug"]
    autocomplete_fields = ["tenant"]

    @admin.display(description="events")
    def event_list(self, obj: Webhook) -> str:
        return ", ".join(obj.events)

    @admin.display(description="secret")
    def secret_state(self, obj: Webhook) -> str:
        return "stored (encrypted)" if obj.secret_encrypted else "none"

    def save_model(self, request: HttpRequest, obj: Webhook, form: Any, change: bool) -> None:
        if form.cleaned_data.get("secret"):
            webhook_secret_set(obj, form.cleaned_data["secret"])
        super().save_model(request, obj, form, change)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    """The outbox: what was sent where, how often, and what the receiver said."""

    list_display = [
        "created_at",
        "event",
        "webhook",
        "status",
        "attempts",
        "response_status",
        "last_attempt_at",
        "next_attempt_at",
        "error",
    ]
    list_filter = ["status", "event"]
    list_select_related = ["webhook", "webhook__tenant"]
    search_fields = ["=event_id", "dedupe_key"]
    date_hierarchy = "created_at"
    actions = ["send_again"]

    @admin.action(description="Send again now (attempts start over)")
    def send_again(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        count = delivery_retry_now(queryset)
        self.message_user(
            request, f"{count} deliveries are due now; the next run of the send task posts them.", messages.INFO
        )
