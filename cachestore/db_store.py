"""The database backend: one CacheEntryRecord row per entry (the default; works in the embedded run)."""

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import connection

from cachestore.backend import entry_checked
from cachestore.entry import CachedEntry, entry_dumps

P = ParamSpec("P")
R = TypeVar("R")


def release_connection() -> None:
    # As accounts.snapshots: a streaming response would otherwise hold this
    # thread's (pooled) connection until it ends. Inside a test's
    # transaction the connection is the test's own, so leave it alone there.
    if not connection.in_atomic_block:
        connection.close()


def _orm(fn: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """`fn` in a worker thread, its database connection given back after.

    Thread-sensitive (asgiref's default), as accounts.snapshots: in a request
    it runs on that request's thread, and a sync caller going through
    async_to_sync (the admin, tests) runs it on its own thread and connection.
    """

    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        finally:
            release_connection()

    return sync_to_async(run)


def _when(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class DatabaseStore:
    """Rows of CacheEntryRecord; expired rows are misses until the expiry task deletes them."""

    async def get(self, tenant_id: int, key: str) -> CachedEntry | None:
        raw = await self._get(tenant_id, key)
        return None if raw is None else entry_checked(raw, tenant_id, key)

    async def set(self, entry: CachedEntry) -> None:
        await self._set(entry)

    async def purge(self, tenant_id: int | None) -> int:
        return await self._purge(tenant_id)

    async def stats(self, tenant_id: int | None) -> dict[str, int]:
        return await self._stats(tenant_id)

    async def hits_add(self, counts: dict[tuple[int, str], int]) -> None:
        await self._hits_add(counts)

    async def popular(self, tenant_id: int | None, limit: int) -> list[CachedEntry]:
        found = await self._popular(tenant_id, limit)
        return [entry for raw, tenant, key in found if (entry := entry_checked(raw, tenant, key)) is not None]

    @staticmethod
    @_orm
    def _hits_add(counts: dict[tuple[int, str], int]) -> None:
        from django.db import transaction
        from django.db.models import F

        from cachestore.models import CacheEntryRecord

        with transaction.atomic():
            for (tenant_id, key), hits in counts.items():
                CacheEntryRecord.objects.filter(key=key, tenant_id=tenant_id).update(hits=F("hits") + hits)

    @staticmethod
    @_orm
    def _popular(tenant_id: int | None, limit: int) -> list[tuple[bytes, int, str]]:
        from cachestore.models import CacheEntryRecord

        rows = CacheEntryRecord.objects.filter(expires_at__gt=_now(), hits__gt=0)
        if tenant_id is not None:
            rows = rows.filter(tenant_id=tenant_id)
        found = rows.order_by("-hits", "-created_at").values_list("payload", "tenant_id", "key")[:limit]
        return [(bytes(payload), tenant, key) for payload, tenant, key in found]

    @staticmethod
    @_orm
    def _get(tenant_id: int, key: str) -> bytes | None:
        from cachestore.models import CacheEntryRecord

        rows = CacheEntryRecord.objects.filter(key=key, tenant_id=tenant_id, expires_at__gt=_now())
        payloads = list(rows.values_list("payload", flat=True)[:1])
        return bytes(payloads[0]) if payloads else None  # PostgreSQL hands back a memoryview

    @staticmethod
    @_orm
    def _set(entry: CachedEntry) -> None:
        from cachestore.models import CacheEntryRecord

        payload = entry_dumps(entry)  # here, in the worker thread: compressing is CPU the event loop keeps
        record = CacheEntryRecord(
            tenant_id=entry.tenant_id,
            key=entry.key,
            endpoint=entry.endpoint,
            model=entry.model,
            payload=payload,
            size_bytes=len(payload),
            created_at=_when(entry.created_at),
            expires_at=_when(entry.expires_at),
        )
        # One statement (INSERT ... ON CONFLICT DO UPDATE): two processes
        # storing the same answer at once cannot collide.
        CacheEntryRecord.objects.bulk_create(
            [record],
            update_conflicts=True,
            unique_fields=["key"],
            update_fields=["tenant", "endpoint", "model", "payload", "size_bytes", "created_at", "expires_at"],
        )

    @staticmethod
    @_orm
    def _purge(tenant_id: int | None) -> int:
        from cachestore.models import CacheEntryRecord

        rows = CacheEntryRecord.objects.all()
        if tenant_id is not None:
            rows = rows.filter(tenant_id=tenant_id)
        now = _now()
        purged = rows.filter(expires_at__gt=now).delete()[0]
        rows.filter(expires_at__lte=now).delete()  # already misses: gone too, but not counted
        return purged

    @staticmethod
    @_orm
    def _stats(tenant_id: int | None) -> dict[str, int]:
        from django.db.models import Count, Sum

        from cachestore.models import CacheEntryRecord

        rows = CacheEntryRecord.objects.filter(expires_at__gt=_now())
        if tenant_id is not None:
            rows = rows.filter(tenant_id=tenant_id)
        totals = rows.aggregate(entries=Count("pk"), size_bytes=Sum("size_bytes"))
        return {"entries": totals["entries"], "size_bytes": totals["size_bytes"] or 0}
