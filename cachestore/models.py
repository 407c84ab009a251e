"""The database backend's table, and the admin's view of the cache per tenant."""

from django.db import models

from accounts.models import Tenant


class CacheEntryRecord(models.Model):
    """One cached answer (the database backend; Redis keeps its own).

    `payload` holds `entry_dumps` bytes, the one format every backend
    stores; the other columns exist to filter, list and expire rows
    without decoding it.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=64, unique=True, help_text="Derived from the tenant and the request.")
    endpoint = models.CharField(max_length=40)
    model = models.CharField(max_length=200)
    payload = models.BinaryField()
    size_bytes = models.PositiveIntegerField()
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)  # the expiry task's range scan

    class Meta:
        verbose_name = "cache entry"
        verbose_name_plural = "cache entries"
        indexes = [models.Index(fields=["tenant", "expires_at"])]  # stats and purge of one tenant

    def __str__(self) -> str:
        return f"{self.endpoint} {self.model} until {self.expires_at:%Y-%m-%d %H:%M:%S}"


class TenantCache(Tenant):
    """Each tenant's cache as staff see it in the admin: stats and purge,
    whichever backend holds the entries."""

    class Meta:
        proxy = True
        verbose_name = "tenant cache"
