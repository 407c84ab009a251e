"""Prepaid credit: the ledger whose entries sum to a tenant's balance."""

from django.db import models
from django.utils import timezone


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
