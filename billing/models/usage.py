"""The usage ledger (one row per request) and its hourly and daily rollups."""

from decimal import Decimal

from django.db import models
from django.db.models import Q

from billing.histograms import LATENCY_COLUMNS, TTFT_COLUMNS
from billing.models.prices import Price


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
