from decimal import Decimal

from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

USD_PER_MTOK = {"max_digits": 18, "decimal_places": 9, "validators": [MinValueValidator(Decimal(0))]}


class PriceQuerySet(models.QuerySet["Price"]):
    def effective_at(self, when: "timezone.datetime") -> "PriceQuerySet":
        return self.filter(effective_from__lte=when)


class Price(models.Model):
    """What one model costs, from `effective_from` on. Rows are never edited
    to change a price: a new row with a later date is added, so past usage
    can always be re-priced at the rate that applied then."""

    class Source(models.TextChoices):
        MANUAL = "manual", "Set by hand"
        SYNC = "sync", "Price sync"

    model = models.CharField(max_length=200, help_text="Upstream model name, or a public model name.")
    provider = models.ForeignKey(
        "proxy.Provider", null=True, blank=True, on_delete=models.CASCADE, help_text="Empty: any provider."
    )
    input_usd_per_mtok = models.DecimalField(**USD_PER_MTOK)
    cached_input_usd_per_mtok = models.DecimalField(
        **USD_PER_MTOK, null=True, blank=True, help_text="Empty: the input price."
    )
    output_usd_per_mtok = models.DecimalField(**USD_PER_MTOK)
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
    """One request that reached an upstream: the ledger's unit of account.

    Token buckets are disjoint (input excludes cached input, output excludes
    reasoning), so a request's cost is exactly the sum over its buckets.
    Money is in integer nano-dollars.
    """

    request_id = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(db_index=True)
    tenant = models.ForeignKey("accounts.Tenant", on_delete=models.PROTECT, related_name="usage_records")
    api_key = models.ForeignKey("accounts.ApiKey", on_delete=models.PROTECT, related_name="usage_records")
    endpoint = models.CharField(max_length=40)
    public_model = models.CharField(max_length=200)
    upstream_model = models.CharField(max_length=200)
    provider = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField()
    error_code = models.CharField(max_length=64, blank=True)
    stream = models.BooleanField(default=False)
    client_disconnected = models.BooleanField(default=False)
    usage_estimated = models.BooleanField(
        default=False, help_text="The upstream reported no usage (stream cut off); tokens are an estimate."
    )
    input_tokens = models.PositiveIntegerField(default=0)
    cached_input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    reasoning_tokens = models.PositiveIntegerField(default=0)
    cost_nanos = models.BigIntegerField(default=0, help_text="USD × 10⁹.")
    latency_ms = models.PositiveIntegerField(default=0)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True, help_text="Time to first token (streams).")

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["tenant", "created_at"]),
            models.Index(fields=["api_key", "created_at"]),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(cost_nanos__gte=0), name="usage_cost_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} {self.public_model} {self.status_code}"

    @property
    def cost_usd(self) -> Decimal:
        return Decimal(self.cost_nanos) / Decimal(10**9)
