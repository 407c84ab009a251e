"""Webhooks and the outbox of their deliveries (billing.webhooks, billing.webhook_delivery)."""

import datetime as dt

from django.db import models
from django.db.models import Q
from django.utils import timezone


class Webhook(models.Model):
    """Where events are POSTed, signed with the webhook's secret
    (billing.webhooks). Without a tenant it hears every event, the staff
    ones (circuits, price sync, reconciliation) included; with one, only
    that tenant's."""

    url = models.URLField(max_length=500)
    # Fernet token (gateway.kernel.secrets): HMAC needs the secret itself, so
    # it cannot be a digest; it is never shown back.
    secret_encrypted = models.TextField(editable=False)
    events = models.JSONField(default=list, help_text="Event names, e.g. budget.threshold, budget.exceeded.")
    tenant = models.ForeignKey(
        "accounts.Tenant",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="webhooks",
        help_text="Empty: every tenant's events and the gateway's own.",
    )
    enabled = models.BooleanField(default=True)
    slack = models.BooleanField(
        default=False, help_text="Send a Slack-compatible body ({'text': ...}) for a Slack incoming webhook."
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["url"]
        constraints = [
            models.UniqueConstraint(fields=["url", "tenant"], name="one_webhook_per_url_and_tenant"),
            # NULLs are distinct in a unique index: the gateway-wide one needs its own.
            models.UniqueConstraint(
                fields=["url"], condition=Q(tenant__isnull=True), name="one_global_webhook_per_url"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.url} ({self.tenant or 'all tenants'})"


class WebhookDeliveryQuerySet(models.QuerySet["WebhookDelivery"]):
    def due(self, now: dt.datetime) -> "WebhookDeliveryQuerySet":
        return self.filter(status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now)


class WebhookDelivery(models.Model):
    """The outbox: one event for one webhook, written in the transaction of
    what caused it and sent by a Celery task until the receiver answers 2xx
    or the attempts run out. `dedupe_key` is unique per webhook, so an event
    raised again (a budget refused a thousand times) is written once."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Gave up"

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=40)
    event_id = models.UUIDField(help_text="The same for every webhook that got this event; receivers dedupe on it.")
    dedupe_key = models.CharField(max_length=200)
    tenant = models.ForeignKey("accounts.Tenant", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.CharField(max_length=500, blank=True, help_text="The start of the receiver's answer.")
    error = models.CharField(max_length=300, blank=True, help_text="Why the last attempt failed.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = WebhookDeliveryQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "webhook deliveries"
        constraints = [models.UniqueConstraint(fields=["webhook", "dedupe_key"], name="one_delivery_per_event")]
        indexes = [
            models.Index(fields=["next_attempt_at"], name="webhook_delivery_due", condition=Q(status="pending")),
        ]

    def __str__(self) -> str:
        return f"{self.event} to {self.webhook.url} ({self.status})"
