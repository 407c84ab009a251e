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
    # Hits served from it, added up in each process and written in batches
    # (cachestore.store.HitCounts): the popular entries a starting process
    # loads into its LRU and cache_warmup --save-popular writes out.
    hits = models.PositiveBigIntegerField(default=0)

    class Meta:
        verbose_name = "cache entry"
        verbose_name_plural = "cache entries"
        indexes = [
            models.Index(fields=["tenant", "expires_at"]),  # stats and purge of one tenant
            models.Index(fields=["tenant", "hits"]),  # a tenant's most popular entries
        ]

    def __str__(self) -> str:
        return f"{self.endpoint} {self.model} until {self.expires_at:%Y-%m-%d %H:%M:%S}"


class TenantCache(Tenant):
    """Each tenant's cache as staff see it in the admin: stats and purge,
    whichever backend holds the entries."""

    class Meta:
        proxy = True
        verbose_name = "tenant cache"


class SemanticVector(models.Model):
    """One cached answer's question as a vector, for the semantic cache.

    Every process searches its own in-process index over these rows
    (cachestore.semantic_index): loaded whole at start-up, then newer rows
    by id and creation time. `partition` is a digest of everything that must
    be equal for two questions to share an answer (the tenant's endpoint,
    resolved model, request parameters, embedding model, match scope), so
    only vectors of one partition are ever compared.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    partition = models.CharField(max_length=64)
    entry_key = models.CharField(max_length=64, help_text="The cache entry this question's answer is stored under.")
    vector = models.BinaryField(help_text="float32, unit length.")
    created_at = models.DateTimeField(db_index=True)  # the index's catch-up reads by time as well as id
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        verbose_name = "semantic cache vector"
        indexes = [models.Index(fields=["tenant", "partition"])]

    def __str__(self) -> str:
        return f"vector for {self.entry_key[:12]} until {self.expires_at:%Y-%m-%d %H:%M:%S}"
