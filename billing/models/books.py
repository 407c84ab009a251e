"""The books' own records: each price sync run, and each reconciliation of the books."""

from django.db import models
from django.utils import timezone


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
