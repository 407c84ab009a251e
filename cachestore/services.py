"""What the response cache holds and what it has saved; purge and expiry.

`cache_stats` and `cache_purge` go through the process's store (Redis or
the database, with every process's LRU told of a purge) and are async;
sync callers (the admin, commands) wrap them in `async_to_sync`.
"""

from typing import Any, TypedDict, TypeVar

from asgiref.sync import sync_to_async
from django.db import transaction
from django.db.models import BigIntegerField, Count, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.models import Tenant
from billing.models import UsageRecord, UsageRollup
from cachestore.db_store import release_connection
from cachestore.models import CacheEntryRecord, SemanticVector
from cachestore.semantic_index import semantic_index
from cachestore.store import cache_store

_Tenants = TypeVar("_Tenants", bound=Tenant)  # Tenant, or the admin's proxy TenantCache

_IDS_PER_QUERY = 500  # keeps `pk IN (...)` under every backend's limit on query parameters


class CacheStats(TypedDict):
    entries: int
    size_bytes: int
    hits: int
    misses: int
    saved_nanos: int


class CacheUsage(TypedDict):
    hits: int
    misses: int
    saved_nanos: int


async def cache_stats(tenant_id: int | None) -> CacheStats:
    """A tenant's cache (None: every tenant's): entries and bytes held now,
    and from the usage ledger the hits, misses and the cost saved."""
    held = await cache_store().stats(tenant_id)
    usage = await sync_to_async(_usage_released)(tenant_id)
    return {"entries": held["entries"], "size_bytes": held["size_bytes"], **usage}


async def cache_purge(tenant_id: int | None) -> int:
    """Delete a tenant's entries (None: every tenant's) everywhere, and the
    semantic cache's vectors of them; returns how many entries."""
    purged = await cache_store().purge(tenant_id)
    await sync_to_async(_vectors_purged)(tenant_id)
    semantic_index().drop_tenant(tenant_id)  # other processes find the entries gone: misses
    return purged


def _vectors_purged(tenant_id: int | None) -> None:
    try:
        rows = SemanticVector.objects.all()
        (rows if tenant_id is None else rows.filter(tenant_id=tenant_id)).delete()
    finally:
        release_connection()


def cache_expire(batch_size: int = 1000) -> int:
    """Delete the database backend's expired rows, `batch_size` per
    transaction; returns how many. (Redis expires entries by itself.)

    Rows that expire while this runs are left for the next run, so a steady
    stream of expiring entries cannot keep one run going forever.
    """
    now = timezone.now()
    deleted = 0
    while ids := list(
        CacheEntryRecord.objects.filter(expires_at__lte=now).order_by().values_list("pk", flat=True)[:batch_size]
    ):
        with transaction.atomic():
            for start in range(0, len(ids), _IDS_PER_QUERY):
                chunk = ids[start : start + _IDS_PER_QUERY]
                deleted += CacheEntryRecord.objects.filter(pk__in=chunk, expires_at__lte=now).delete()[0]
    _expired_vectors_deleted(now, batch_size)
    return deleted


def _expired_vectors_deleted(now: Any, batch_size: int) -> None:
    """The semantic cache's expired vectors (every backend's: they live in the database)."""
    while ids := list(
        SemanticVector.objects.filter(expires_at__lte=now).order_by().values_list("pk", flat=True)[:batch_size]
    ):
        for start in range(0, len(ids), _IDS_PER_QUERY):
            SemanticVector.objects.filter(pk__in=ids[start : start + _IDS_PER_QUERY]).delete()


def cache_usage(tenant_id: int | None) -> CacheUsage:
    """Hits and saved cost over all time; misses over the raw records kept.

    Raw usage records are pruned after BILLING_USAGE_RETENTION_DAYS, so hits
    and saved read as billing does: the daily rollups plus the records not
    rolled up yet (both count `cache_hit`, the flag the rollups sum). The
    rollups do not count misses, so misses cover the raw records still
    kept, i.e. the last BILLING_USAGE_RETENTION_DAYS days. Everything is
    read in one statement, so a rollup run committing meanwhile cannot make
    a record count twice or not at all.
    """
    totals: CacheUsage = {"hits": 0, "misses": 0, "saved_nanos": 0}
    tenants = Tenant.objects.all() if tenant_id is None else Tenant.objects.filter(pk=tenant_id)
    # the stubs' plugin cannot see annotations spread from a dict
    for row in tenants.annotate(**_cache_usage_columns()).values(  # type: ignore[misc]
        "rolled_hits", "raw_hits", "rolled_saved", "raw_saved", "misses"
    ):
        totals["hits"] += row["rolled_hits"] + row["raw_hits"]
        totals["saved_nanos"] += row["rolled_saved"] + row["raw_saved"]
        totals["misses"] += row["misses"]
    return totals


def _usage_released(tenant_id: int | None) -> CacheUsage:
    try:
        return cache_usage(tenant_id)
    finally:
        release_connection()


def with_cache_usage(tenants: QuerySet[_Tenants]) -> QuerySet[_Tenants]:
    return tenants.annotate(**_cache_usage_columns())


def _cache_usage_columns() -> dict[str, Coalesce]:
    days = UsageRollup.objects.filter(tenant=OuterRef("pk"), granularity=UsageRollup.Granularity.DAY)
    unrolled = UsageRecord.objects.filter(tenant=OuterRef("pk"), rolled_up=False)
    misses = UsageRecord.objects.filter(tenant=OuterRef("pk"), cache_status="miss")
    return {
        "rolled_hits": _per_tenant(days, Sum("cache_hits")),
        "rolled_saved": _per_tenant(days, Sum("saved_nanos")),
        "raw_hits": _per_tenant(unrolled, Count("pk", filter=Q(cache_hit=True))),
        "raw_saved": _per_tenant(unrolled, Sum("saved_nanos")),
        "misses": _per_tenant(misses, Count("pk")),
    }


def _per_tenant(rows: QuerySet[Any], total: Any) -> Coalesce:
    """`total` over `rows` of the outer tenant, as a scalar subquery (0 when none)."""
    summed = rows.order_by().values("tenant").annotate(total=total).values("total")
    return Coalesce(Subquery(summed, output_field=BigIntegerField()), 0)
