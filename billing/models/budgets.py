"""Budgets: spending limits per calendar period, and what each has spent per period."""

from decimal import Decimal

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone


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
