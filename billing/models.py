import datetime as dt
from decimal import Decimal
from typing import Any

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from billing.histograms import LATENCY_COLUMNS, TTFT_COLUMNS
from billing.media_pricing import MEDIA_RATE_CAPS
from billing.pricing import MAX_REQUEST_FEE_USD, MAX_USD_PER_MTOK

# Any: these are spread into DecimalField(**...), whose parameters differ in type.
USD_PER_MTOK: dict[str, Any] = {
    "max_digits": 18,
    "decimal_places": 9,
    "validators": [MinValueValidator(Decimal(0)), MaxValueValidator(MAX_USD_PER_MTOK)],
}
OPTIONAL_USD_PER_MTOK: dict[str, Any] = {**USD_PER_MTOK, "null": True, "blank": True}


def _media_rate(name: str, help_text: str) -> Any:
    """An optional media rate (billing.media_pricing), capped as price_amount_check caps it."""
    cap = MEDIA_RATE_CAPS[name][0]
    return models.DecimalField(
        max_digits=18,
        decimal_places=9,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal(0)), MaxValueValidator(cap)],
        help_text=help_text,
    )


class PriceQuerySet(models.QuerySet["Price"]):
    def effective_at(self, when: dt.datetime) -> "PriceQuerySet":
        return self.filter(effective_from__lte=when)


class Price(models.Model):
    """What one model costs, from `effective_from` on. Rows are never edited
    to change a price: a new row with a later date is added, so past usage
    can always be re-priced at the rate that applied then.

    Every rate is USD per million tokens. An empty optional rate falls back
    to the rate it refines (cached input -> input, 1-hour cache write ->
    5-minute cache write -> input, reasoning -> output, audio input ->
    input, audio output -> output, image input/output -> input/output, a
    long-context rate -> its base rate). The media rates (per second of
    audio, per character, per image) are charged on top of the tokens, and
    only when set."""

    class Source(models.TextChoices):
        MANUAL = "manual", "Set by hand"
        SYNC = "sync", "Price sync"

    model = models.CharField(max_length=200, help_text="Upstream model name, or a public model name.")
    provider = models.ForeignKey(
        "proxy.Provider", null=True, blank=True, on_delete=models.CASCADE, help_text="Empty: any provider."
    )
    input_usd_per_mtok = models.DecimalField(**USD_PER_MTOK)
    cached_input_usd_per_mtok = models.DecimalField(**OPTIONAL_USD_PER_MTOK, help_text="Cache reads.")
    cache_write_5m_usd_per_mtok = models.DecimalField(**OPTIONAL_USD_PER_MTOK)
    cache_write_1h_usd_per_mtok = models.DecimalField(**OPTIONAL_USD_PER_MTOK)
    output_usd_per_mtok = models.DecimalField(**USD_PER_MTOK)
    reasoning_usd_per_mtok = models.DecimalField(**OPTIONAL_USD_PER_MTOK)
    audio_input_usd_per_mtok = models.DecimalField(
        **OPTIONAL_USD_PER_MTOK, help_text="Audio input (the realtime API). Empty: the input rate."
    )
    audio_output_usd_per_mtok = models.DecimalField(
        **OPTIONAL_USD_PER_MTOK, help_text="Audio output (the realtime API). Empty: the output rate."
    )
    image_input_usd_per_mtok = models.DecimalField(
        **OPTIONAL_USD_PER_MTOK, help_text="Image tokens in (gpt-image-1 edits). Empty: the input rate."
    )
    image_output_usd_per_mtok = models.DecimalField(
        **OPTIONAL_USD_PER_MTOK, help_text="Image tokens out (gpt-image-1). Empty: the output rate."
    )
    input_usd_per_second = _media_rate(
        "input_usd_per_second", "USD per second of audio transcribed or translated (LiteLLM input_cost_per_second)."
    )
    input_usd_per_character = _media_rate(
        "input_usd_per_character", "USD per character of speech input (LiteLLM input_cost_per_character)."
    )
    output_usd_per_image = _media_rate(
        "output_usd_per_image",
        "USD per image generated; a row named like hd/1024-x-1024/dall-e-3 prices that size and quality.",
    )
    long_context_threshold = models.PositiveIntegerField(
        null=True, blank=True, help_text="Above this many prompt tokens the long-context rates apply to the request."
    )
    long_input_usd_per_mtok = models.DecimalField(**OPTIONAL_USD_PER_MTOK)
    long_cached_input_usd_per_mtok = models.DecimalField(**OPTIONAL_USD_PER_MTOK)
    long_cache_write_5m_usd_per_mtok = models.DecimalField(**OPTIONAL_USD_PER_MTOK)
    long_cache_write_1h_usd_per_mtok = models.DecimalField(**OPTIONAL_USD_PER_MTOK)
    long_output_usd_per_mtok = models.DecimalField(**OPTIONAL_USD_PER_MTOK)
    request_fee_usd = models.DecimalField(
        max_digits=18,
        decimal_places=9,
        default=Decimal(0),
        validators=[MinValueValidator(Decimal(0)), MaxValueValidator(MAX_REQUEST_FEE_USD)],
    )
    max_output_tokens = models.PositiveIntegerField(
        null=True, blank=True, help_text="The model's output limit: the worst case a budget reserves."
    )
    effective_from = models.DateTimeField(default=timezone.now)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.MANUAL)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = PriceQuerySet.as_manager()

    class Meta:
        ordering = ["model", "-effective_from"]
        indexes = [models.Index(fields=["model", "effective_from"])]

    def __str__(self) -> str:
        return f"{self.model} from {self.effective_from:%Y-%m-%d %H:%M}"


class UsageRecord(models.Model):
    """One request that reached an upstream (or was served from the cache):
    the ledger's unit of account.

    Token buckets are disjoint (input excludes cached input and cache
    writes, output excludes reasoning), so a request's cost is exactly the
    sum over its buckets. Money is in integer nano-dollars (USD x 10^9).
    """

    request_id = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(db_index=True)
    tenant = models.ForeignKey("accounts.Tenant", on_delete=models.PROTECT, related_name="usage_records")
    api_key = models.ForeignKey("accounts.ApiKey", on_delete=models.PROTECT, related_name="usage_records")
    endpoint = models.CharField(max_length=40)
    public_model = models.CharField(max_length=200)
    upstream_model = models.CharField(max_length=200)
    provider = models.CharField(max_length=64)
    price = models.ForeignKey(
        Price, null=True, blank=True, on_delete=models.PROTECT, related_name="+", help_text="The price applied."
    )
    status_code = models.PositiveSmallIntegerField()
    error_code = models.CharField(max_length=64, blank=True)
    stream = models.BooleanField(default=False)
    client_disconnected = models.BooleanField(default=False)
    usage_estimated = models.BooleanField(
        default=False, help_text="The upstream reported no usage (stream cut off); tokens are an estimate."
    )
    cache_hit = models.BooleanField(default=False)
    cache_status = models.CharField(
        max_length=6, blank=True, help_text="hit, miss or bypass when the response cache was asked; empty otherwise."
    )
    input_tokens = models.PositiveIntegerField(default=0)
    cached_input_tokens = models.PositiveIntegerField(default=0)
    cache_write_5m_tokens = models.PositiveIntegerField(default=0)
    cache_write_1h_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    reasoning_tokens = models.PositiveIntegerField(default=0)
    audio_input_tokens = models.PositiveIntegerField(default=0, help_text="Uncached audio input (realtime).")
    audio_output_tokens = models.PositiveIntegerField(default=0)
    image_input_tokens = models.PositiveIntegerField(default=0, help_text="Image tokens in (gpt-image-1).")
    image_output_tokens = models.PositiveIntegerField(default=0)
    audio_input_ms = models.PositiveIntegerField(default=0, help_text="Audio transcribed or translated, in ms.")
    input_characters = models.PositiveIntegerField(default=0, help_text="Characters of speech input.")
    output_images = models.PositiveIntegerField(default=0, help_text="Images generated.")
    cost_nanos = models.BigIntegerField(default=0, help_text="USD x 10^9.")
    saved_nanos = models.BigIntegerField(default=0, help_text="What a cache hit saved, USD x 10^9.")
    prepaid = models.BooleanField(default=False, help_text="Charged to the tenant's prepaid credit.")
    latency_ms = models.PositiveIntegerField(default=0)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True, help_text="Time to first token (streams).")
    rolled_up = models.BooleanField(default=False, help_text="Counted in the hourly and daily rollups.")
    purpose = models.CharField(
        max_length=20,
        blank=True,
        help_text="Why the gateway made this call itself (routing, augmentation...); empty for a client's request.",
    )
    guardrails = models.CharField(
        max_length=200, blank=True, help_text="Guardrail verdicts, e.g. 'pii:redact:2'; never the matched text."
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["tenant", "created_at"]),
            models.Index(fields=["api_key", "created_at"]),
            models.Index(fields=["rolled_up", "created_at"], name="usage_not_rolled_up", condition=Q(rolled_up=False)),
            # The unpriced-traffic alert reads a day of these: a handful of
            # rows, never the whole day's traffic.
            models.Index(
                fields=["created_at"], name="usage_unpriced", condition=Q(price__isnull=True, cache_hit=False)
            ),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(cost_nanos__gte=0), name="usage_cost_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} {self.public_model} {self.status_code}"

    @property
    def cost_usd(self) -> Decimal:
        return Decimal(self.cost_nanos) / Decimal(10**9)


class Period(models.TextChoices):
    DAY = "day", "Day"
    WEEK = "week", "Week (from Monday)"
    MONTH = "month", "Calendar month"
    TOTAL = "total", "All time"


class Budget(models.Model):
    """A spending limit on a tenant or on one key, per calendar period (UTC).

    Several can apply at once ($10 a day and $200 a month). Requests reserve
    their worst-case cost against every budget that covers them and are
    refused when one would be exceeded; crossing `soft_limit_percent`
    raises an alert."""

    tenant = models.ForeignKey(
        "accounts.Tenant", null=True, blank=True, on_delete=models.CASCADE, related_name="budgets"
    )
    api_key = models.ForeignKey(
        "accounts.ApiKey", null=True, blank=True, on_delete=models.CASCADE, related_name="budgets"
    )
    period = models.CharField(max_length=8, choices=Period.choices)
    limit_usd = models.DecimalField(max_digits=18, decimal_places=9, validators=[MinValueValidator(Decimal(0))])
    soft_limit_percent = models.PositiveSmallIntegerField(
        default=80, validators=[MinValueValidator(1), MaxValueValidator(100)]
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(tenant__isnull=False, api_key__isnull=True) | Q(tenant__isnull=True, api_key__isnull=False),
                name="budget_on_tenant_or_key",
            )
        ]

    def __str__(self) -> str:
        owner = f"tenant {self.tenant}" if self.tenant_id else f"key {self.api_key}"
        return f"${self.limit_usd.normalize():f} per {self.period} on {owner}"


class BudgetSpend(models.Model):
    """What a budget has spent in one period: one row per period, so a new
    period starts at zero by construction and past periods stay auditable."""

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="spends")
    period_start = models.DateTimeField()
    spent_nanos = models.BigIntegerField(default=0)
    soft_alerted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["budget", "period_start"], name="one_spend_per_period")]
        ordering = ["-period_start"]

    def __str__(self) -> str:
        return f"{self.budget} from {self.period_start:%Y-%m-%d}: {self.spent_nanos} nanos"


class CreditEntry(models.Model):
    """The prepaid ledger: a tenant's balance is the sum of its entries."""

    class Kind(models.TextChoices):
        TOPUP = "topup", "Top-up"
        USAGE = "usage", "Usage"
        ADJUSTMENT = "adjustment", "Adjustment"
        REFUND = "refund", "Refund"

    tenant = models.ForeignKey("accounts.Tenant", on_delete=models.PROTECT, related_name="credit_entries")
    kind = models.CharField(max_length=12, choices=Kind.choices)
    amount_nanos = models.BigIntegerField(help_text="Positive adds credit, negative uses it. USD x 10^9.")
    note = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "credit entries"
        indexes = [models.Index(fields=["tenant", "kind"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount_nanos} nanos for {self.tenant}"


class UsageRollup(models.Model):
    """Usage summed per hour or day, tenant, key, model and provider.

    A bucket is always recomputed whole from the raw records, never added
    to, so a rerun or an overlap cannot count anything twice."""

    class Granularity(models.TextChoices):
        HOUR = "hour", "Hour"
        DAY = "day", "Day"

    granularity = models.CharField(max_length=4, choices=Granularity.choices)
    bucket_start = models.DateTimeField()
    tenant = models.ForeignKey("accounts.Tenant", on_delete=models.PROTECT, related_name="+")
    api_key = models.ForeignKey("accounts.ApiKey", on_delete=models.PROTECT, related_name="+")
    public_model = models.CharField(max_length=200)
    provider = models.CharField(max_length=64)
    requests = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    cache_hits = models.PositiveIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    cached_input_tokens = models.BigIntegerField(default=0)
    cache_write_5m_tokens = models.BigIntegerField(default=0)
    cache_write_1h_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)
    cost_nanos = models.BigIntegerField(default=0)
    saved_nanos = models.BigIntegerField(default=0)
    prepaid_cost_nanos = models.BigIntegerField(default=0, help_text="The part of cost charged to prepaid credit.")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["granularity", "bucket_start", "api_key", "public_model", "provider"], name="one_rollup_row"
            )
        ]
        indexes = [models.Index(fields=["tenant", "granularity", "bucket_start"])]
        ordering = ["-bucket_start"]

    def __str__(self) -> str:
        return f"{self.granularity} {self.bucket_start:%Y-%m-%d %H:00} {self.public_model}"


# Requests per latency bucket and streams per time-to-first-token bucket
# (billing.histograms), so that percentiles survive the rollup: one summable
# column per bucket, added in a loop because the bounds define the names.
for _column in (*LATENCY_COLUMNS, *TTFT_COLUMNS):
    UsageRollup.add_to_class(_column, models.PositiveIntegerField(default=0))


class PriceSyncRun(models.Model):
    """One run of the price sync, with what it did and why it skipped."""

    started_at = models.DateTimeField(default=timezone.now)
    source = models.CharField(max_length=500)
    ok = models.BooleanField(default=False)
    added = models.PositiveIntegerField(default=0)
    changed = models.PositiveIntegerField(default=0)
    unchanged = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    details = models.JSONField(default=dict, blank=True, help_text="Skipped models and their reasons.")

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"price sync {self.started_at:%Y-%m-%d %H:%M} ({'ok' if self.ok else 'failed'})"


class ReconciliationReport(models.Model):
    """The books checked against each other: spend counters, raw usage,
    rollups and the prepaid ledger. `differences` is empty when they agree."""

    created_at = models.DateTimeField(default=timezone.now)
    ok = models.BooleanField()
    checked = models.JSONField(default=dict)
    differences = models.JSONField(default=list)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"reconciliation {self.created_at:%Y-%m-%d %H:%M}: {'ok' if self.ok else 'DIFFERENCES'}"


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
