"""Where cache entries live. The request path talks to `cache_store()` only.

Backends: the database (default; works in the embedded run) and Redis (when
REDIS_URL is set), each behind an in-process LRU. Entries are always
scoped to a tenant: the key is derived from the tenant id, and purge and
stats take the tenant. Every backend stores `entry_dumps` bytes, and every
read checks that the entry it decoded is the tenant's, under that key, and
still fresh, so a mix-up anywhere below can only ever cost a miss.

With REDIS_URL set, each process's LRU is kept honest across processes:
`set` and `purge` publish an invalidation, and a listener in every process
drops what others replaced or purged.
"""

import asyncio
import contextlib
import contextvars
import datetime as dt
import hashlib
import logging
import math
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ParamSpec, Protocol, TypeVar

import orjson
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.signals import setting_changed
from django.db import connection
from django.dispatch import receiver

from cachestore.entry import CachedEntry, entry_dumps, entry_loads
from gateway.kernel.redis import redis_client_for, redis_key

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


class CacheStore(Protocol):
    async def get(self, tenant_id: int, key: str) -> CachedEntry | None:
        """The fresh entry for this key, or None (expired entries are misses)."""

    async def set(self, entry: CachedEntry) -> None:
        """Store or replace an entry until entry.expires_at."""

    async def purge(self, tenant_id: int | None) -> int:
        """Delete a tenant's entries (None: every tenant's); returns how many."""

    async def stats(self, tenant_id: int | None) -> dict[str, int]:
        """{"entries": n, "size_bytes": n} for a tenant (None: all)."""

    async def hits_add(self, counts: dict[tuple[int, str], int]) -> None:
        """Add hits to entries, by (tenant, key)."""

    async def popular(self, tenant_id: int | None, limit: int) -> list[CachedEntry]:
        """A tenant's (None: every tenant's) most hit fresh entries, most hit first."""


def _checked(raw: bytes, tenant_id: int, key: str) -> CachedEntry | None:
    """The entry in `raw` if it is this tenant's, under this key, and fresh."""
    try:
        entry = entry_loads(raw)
    except Exception:  # written by another version of the format: a miss, not an error
        log.warning("unreadable cache entry for tenant %s", tenant_id, exc_info=True)
        return None
    if entry.tenant_id != tenant_id or entry.key != key or not entry.is_fresh(time.time()):
        return None
    return entry


# --- The database -----------------------------------------------------------------


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
        return None if raw is None else _checked(raw, tenant_id, key)

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
        return [entry for raw, tenant, key in found if (entry := _checked(raw, tenant, key)) is not None]

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


# --- Redis ------------------------------------------------------------------------


class _Lua:
    """A script run by its SHA (loaded on first use by each server)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, client: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        from redis.exceptions import NoScriptError  # redis is imported only where it is used (memory)

        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await client.eval(self.source, len(keys), *keys, *args)


# KEYS: value, index, sizes. ARGV: payload, ttl ms, key, expires_at, size,
# now, how many expired members to prune. The index (a sorted set of key ->
# expires_at) and the sizes (a hash of key -> bytes) let stats count a
# tenant without SCAN; each set prunes a few expired members, so a busy
# tenant's index never fills with the dead, and the index lives exactly as
# long as its last entry.
_SET = _Lua("""
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[3], ARGV[5])
local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[6], 'LIMIT', 0, ARGV[7])
if #dead > 0 then
  redis.call('ZREM', KEYS[2], unpack(dead))
  redis.call('HDEL', KEYS[3], unpack(dead))
end
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
local until_ms = math.ceil(tonumber(last[2]) * 1000) + 1000
redis.call('PEXPIREAT', KEYS[2], until_ms)
redis.call('PEXPIREAT', KEYS[3], until_ms)
return #dead
""")

# KEYS: index, sizes. ARGV: now. Prunes every expired member, then counts.
_STATS = _Lua("""
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for i = 1, #dead, 1000 do
  redis.call('HDEL', KEYS[2], unpack(dead, i, math.min(i + 999, #dead)))
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local size = 0
for _, bytes in ipairs(redis.call('HVALS', KEYS[2])) do size = size + tonumber(bytes) end
return {redis.call('ZCARD', KEYS[1]), size}
""")

# KEYS: index, sizes. ARGV: the tenant's value key prefix, batch size. (The
# value keys are built from ARGV: fine on one Redis, not on Redis Cluster.)
# Returns the entries deleted (values that had not expired) and how many
# members are left: a large tenant is purged over several short scripts
# rather than one that blocks Redis.
_PURGE_BATCH = _Lua("""
local popped = redis.call('ZPOPMIN', KEYS[1], ARGV[2])
local deleted = 0
for i = 1, #popped, 2 do
  deleted = deleted + redis.call('UNLINK', ARGV[1] .. popped[i])
  redis.call('HDEL', KEYS[2], popped[i])
end
local left = redis.call('ZCARD', KEYS[1])
if left == 0 then redis.call('UNLINK', KEYS[2]) end
return {deleted, left}
""")

_PRUNE_ON_SET = 16
POPULAR_KEPT = 10_000  # Redis keeps the hits of this many most hit entries, per tenant and overall
_PURGE_BATCH_SIZE = 500
_SCAN_COUNT = 1000


def _tenant_and_key(member: str) -> tuple[int | None, str]:
    tenant, _, key = member.partition(":")
    return (int(tenant), key) if tenant.isdigit() else (None, key)


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


class RedisStore:
    """Values under `{prefix}:cache:{tenant}:{key}`, expiring by themselves at
    entry.expires_at, plus a per-tenant index for stats and purge."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _client(self) -> Any:
        return redis_client_for(self.url)

    @staticmethod
    def value_key(tenant_id: int, key: str) -> str:
        return redis_key("cache", tenant_id, key)

    @staticmethod
    def _index_keys(tenant_id: int) -> list[str]:
        return [redis_key("cache", "index", tenant_id), redis_key("cache", "sizes", tenant_id)]

    async def get(self, tenant_id: int, key: str) -> CachedEntry | None:
        raw = await self._client().get(self.value_key(tenant_id, key))
        return None if raw is None else _checked(raw, tenant_id, key)

    async def set(self, entry: CachedEntry) -> None:
        now = time.time()
        value = self.value_key(entry.tenant_id, entry.key)
        index, sizes = self._index_keys(entry.tenant_id)
        ttl_ms = math.ceil((entry.expires_at - now) * 1000)
        if ttl_ms <= 0:  # already expired: it replaces the stored entry with nothing
            pipe = self._client().pipeline(transaction=True)
            pipe.unlink(value).zrem(index, entry.key).hdel(sizes, entry.key)
            await pipe.execute()
            return
        payload = entry_dumps(entry)
        await _SET(
            self._client(),
            [value, index, sizes],
            [payload, ttl_ms, entry.key, entry.expires_at, len(payload), now, _PRUNE_ON_SET],
        )

    async def purge(self, tenant_id: int | None) -> int:
        if tenant_id is None:
            return await self._purge_all()
        await self._client().unlink(self._popular_key(tenant_id))  # the overall set's members are skipped once gone
        purged = 0
        while True:
            deleted, left = await _PURGE_BATCH(
                self._client(), self._index_keys(tenant_id), [self.value_key(tenant_id, ""), _PURGE_BATCH_SIZE]
            )
            purged += int(deleted)
            if not int(left):
                return purged

    async def _purge_all(self) -> int:
        """An admin operation: SCAN for every tenant's values (lock keys and
        indexes do not match `cache:<digit>`), then drop the indexes."""
        prefix = _glob_escape(redis_key("cache"))
        purged = await self._unlink_matching(f"{prefix}:[0-9]*")
        await self._unlink_matching(f"{prefix}:index:*")
        await self._unlink_matching(f"{prefix}:sizes:*")
        await self._unlink_matching(f"{prefix}:popular*")
        return purged

    async def _unlink_matching(self, pattern: str) -> int:
        client, unlinked, batch = self._client(), 0, []
        async for name in client.scan_iter(match=pattern, count=_SCAN_COUNT):
            batch.append(name)
            if len(batch) >= _PURGE_BATCH_SIZE:
                unlinked += await client.unlink(*batch)
                batch = []
        if batch:
            unlinked += await client.unlink(*batch)
        return unlinked

    @staticmethod
    def _popular_key(tenant_id: int | None) -> str:
        return redis_key("cache", "popular") if tenant_id is None else redis_key("cache", "popular", tenant_id)

    async def hits_add(self, counts: dict[tuple[int, str], int]) -> None:
        """Per tenant and across tenants, sorted sets of hits, each trimmed to
        the POPULAR_KEPT most hit (expired entries drop out as they are read)."""
        pipe = self._client().pipeline(transaction=False)
        for (tenant_id, key), hits in counts.items():
            pipe.zincrby(self._popular_key(tenant_id), hits, key)
            pipe.zincrby(self._popular_key(None), hits, f"{tenant_id}:{key}")
        for name in {self._popular_key(t) for t, _ in counts} | {self._popular_key(None)}:
            pipe.zremrangebyrank(name, 0, -POPULAR_KEPT - 1)
        await pipe.execute()

    async def popular(self, tenant_id: int | None, limit: int) -> list[CachedEntry]:
        if limit <= 0:
            return []
        # Twice as many as asked: some of the most hit may have expired since.
        members = await self._client().zrevrange(self._popular_key(tenant_id), 0, 2 * limit - 1)
        named = [(tenant_id, m.decode()) if tenant_id is not None else _tenant_and_key(m.decode()) for m in members]
        wanted = [(t, k) for t, k in named if t is not None]
        if not wanted:
            return []
        raws = await self._client().mget([self.value_key(t, k) for t, k in wanted])
        found = [_checked(raw, t, k) for raw, (t, k) in zip(raws, wanted, strict=True) if raw is not None]
        return [entry for entry in found if entry is not None][:limit]

    async def stats(self, tenant_id: int | None) -> dict[str, int]:
        tenants = [tenant_id] if tenant_id is not None else await self._indexed_tenants()
        entries = size_bytes = 0
        for tenant in tenants:
            count, size = await _STATS(self._client(), self._index_keys(tenant), [time.time()])
            entries, size_bytes = entries + int(count), size_bytes + int(size)
        return {"entries": entries, "size_bytes": size_bytes}

    async def _indexed_tenants(self) -> list[int]:
        pattern = _glob_escape(redis_key("cache", "index")) + ":*"
        names = [name async for name in self._client().scan_iter(match=pattern, count=_SCAN_COUNT)]
        return sorted({int(name.rsplit(b":", 1)[1]) for name in names})


# --- The in-process LRU -------------------------------------------------------------


def _footprint(entry: CachedEntry) -> int:
    """Roughly what an entry holds in memory: its bytes plus the objects around them."""
    return len(entry.body) + sum(len(event) for event in entry.events or ()) + 512


class Lru:
    """Entries by (tenant, key), least recently used first, bounded by total bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size_bytes = 0
        self._entries: OrderedDict[tuple[int, str], tuple[CachedEntry, int]] = OrderedDict()
        # Event loops in other threads (the admin's async_to_sync, tests)
        # share the process's LRU; uncontended, the lock costs nanoseconds.
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, item: tuple[int, str]) -> bool:
        return item in self._entries

    def get(self, tenant_id: int, key: str, now: float) -> CachedEntry | None:
        with self._lock:
            held = self._entries.get((tenant_id, key))
            if held is None:
                return None
            if not held[0].is_fresh(now):
                self._pop((tenant_id, key))
                return None
            self._entries.move_to_end((tenant_id, key))
            return held[0]

    def put(self, entry: CachedEntry) -> None:
        size = _footprint(entry)
        with self._lock:
            self._pop((entry.tenant_id, entry.key))
            if size > self.max_bytes // 4:  # one large answer must not flush everything else
                return
            self._entries[(entry.tenant_id, entry.key)] = (entry, size)
            self.size_bytes += size
            while self.size_bytes > self.max_bytes:
                self._pop(next(iter(self._entries)))

    def drop(self, tenant_id: int, key: str) -> None:
        with self._lock:
            self._pop((tenant_id, key))

    def drop_tenant(self, tenant_id: int | None) -> None:
        with self._lock:
            if tenant_id is None:
                self._entries.clear()
                self.size_bytes = 0
                return
            for item in [item for item in self._entries if item[0] == tenant_id]:
                self._pop(item)

    def _pop(self, item: tuple[int, str]) -> None:
        held = self._entries.pop(item, None)
        if held is not None:
            self.size_bytes -= held[1]


_BACKOFF_FIRST_SECONDS = 0.5
_BACKOFF_MAX_SECONDS = 30.0
_IDLE_PING_SECONDS = 15.0  # a silent subscription is pinged; no answer in as long again: reconnect


class LruStore:
    """A bounded in-process LRU in front of a backend store.

    With a Redis URL, `set` and `purge` tell the other processes (pub/sub on
    `{prefix}:cache:invalidate`), and `start_listener` runs the task that
    hears them. Invalidations sent while the listener was not subscribed are
    lost, so each (re)subscription empties the LRU.
    """

    def __init__(self, backend: CacheStore, *, max_bytes: int, redis_url: str = "") -> None:
        self.backend = backend
        self.lru = Lru(max_bytes)
        self.redis_url = redis_url
        self.origin = uuid.uuid4().hex  # tells this store's own messages apart from other processes'
        self.subscribed = False
        # Bumped by every write and invalidation: a backend read that started
        # before one does not fill the LRU with what may be the old answer.
        self._generation = 0
        self._backoff = _BACKOFF_FIRST_SECONDS
        self._listener: asyncio.Task[None] | None = None
        self._hits: dict[tuple[int, str], int] = {}
        self._background: asyncio.Task[None] | None = None

    async def get(self, tenant_id: int, key: str) -> CachedEntry | None:
        entry = self.lru.get(tenant_id, key, time.time())
        if entry is not None:
            return entry
        generation = self._generation
        try:
            entry = await self.backend.get(tenant_id, key)
        except Exception as error:  # the cache failing must not fail the request: a miss
            log.warning("cache backend read failed: %r", error)
            return None
        if entry is not None and generation == self._generation:
            self.lru.put(entry)
        return entry

    def remember(self, entry: CachedEntry) -> None:
        """Serve this entry from this process at once, before `set` has
        written it to the backend (a request right behind must not miss)."""
        self._generation += 1
        self.lru.put(entry)

    async def set(self, entry: CachedEntry) -> None:
        self._generation += 1
        await self.backend.set(entry)
        self.lru.put(entry)
        await self._publish(entry.tenant_id, entry.key)

    async def purge(self, tenant_id: int | None) -> int:
        self._generation += 1
        purged = await self.backend.purge(tenant_id)
        self.lru.drop_tenant(tenant_id)  # after: also drops what a set put in meanwhile
        await self._publish(tenant_id, None)
        return purged

    async def stats(self, tenant_id: int | None) -> dict[str, int]:
        return await self.backend.stats(tenant_id)

    # --- popularity: hits counted here, written in batches; the LRU warmed from them ---

    def hit_count(self, tenant_id: int, key: str) -> None:
        """One hit served from this entry (a dict update: the request path writes nothing)."""
        item = (tenant_id, key)
        self._hits[item] = self._hits.get(item, 0) + 1

    async def hits_flush(self) -> None:
        """Write the hits counted since the last flush (kept for the next one if that fails)."""
        counts, self._hits = self._hits, {}
        if not counts:
            return
        try:
            await self.backend.hits_add(counts)
        except Exception:
            log.warning("cache hit counts not written; kept for the next flush", exc_info=True)
            for item, hits in counts.items():
                self._hits[item] = self._hits.get(item, 0) + hits

    async def hits_add(self, counts: dict[tuple[int, str], int]) -> None:
        await self.backend.hits_add(counts)

    async def popular(self, tenant_id: int | None, limit: int) -> list[CachedEntry]:
        await self.hits_flush()  # this process's own hits count too
        return await self.backend.popular(tenant_id, limit)

    async def warm(self, limit: int) -> int:
        """Fill the LRU with the `limit` most hit entries of every tenant; returns how many."""
        generation = self._generation
        try:
            entries = await self.backend.popular(None, limit)
        except Exception:  # the backend restarting: the LRU fills as requests come
            log.warning("the cache's LRU was not warmed", exc_info=True)
            return 0
        if generation != self._generation:  # written or invalidated meanwhile: what was read may be old
            return 0
        for entry in reversed(entries):  # the most hit last: the most recently used
            self.lru.put(entry)
        return len(entries)

    def start_background(self) -> None:
        """Once per loop (gateway.lifecycle): the LRU warmed, then hits flushed
        every CACHESTORE_HITS_FLUSH_SECONDS."""
        task = self._background
        if task is not None and not task.done() and not task.get_loop().is_closed():
            return
        self._background = asyncio.get_running_loop().create_task(
            self._warm_then_flush(), context=contextvars.Context()
        )

    async def _warm_then_flush(self) -> None:
        if settings.CACHESTORE_WARM_ENTRIES > 0:
            warmed = await self.warm(settings.CACHESTORE_WARM_ENTRIES)
            if warmed:
                log.info("the cache's LRU was warmed with the %d most hit entries", warmed)
        while True:
            await asyncio.sleep(settings.CACHESTORE_HITS_FLUSH_SECONDS)
            await self.hits_flush()

    def forget(self, tenant_id: int | None, key: str | None) -> None:
        """Drop an entry (key None: the tenant's; both None: everything) from this process's LRU."""
        self._generation += 1
        if key is None:
            self.lru.drop_tenant(tenant_id)
        elif tenant_id is not None:
            self.lru.drop(tenant_id, key)

    # --- cross-process invalidation ---

    async def _publish(self, tenant_id: int | None, key: str | None) -> None:
        if not self.redis_url:
            return
        message = orjson.dumps({"origin": self.origin, "tenant": tenant_id, "key": key})
        await redis_client_for(self.redis_url).publish(redis_key("cache", "invalidate"), message)

    def start_listener(self) -> "asyncio.Task[None] | None":
        """Start the invalidation listener on this loop unless one runs (on
        any live loop) already; a few attribute reads when it does."""
        if not self.redis_url:
            return None
        task = self._listener
        if task is not None and not task.done() and not task.get_loop().is_closed():
            return task
        # A fresh context: the listener must not inherit the request's.
        self._listener = asyncio.get_running_loop().create_task(self._listen_forever(), context=contextvars.Context())
        return self._listener

    async def stop_listener(self) -> None:
        """Shutdown: the listener and the background task end; the hits counted are written."""
        for task in (self._listener, self._background):
            if task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._listener = self._background = None
        await self.hits_flush()

    async def _listen_forever(self) -> None:
        while True:
            try:
                await self._listen()
            except Exception as error:  # Redis restarting or unreachable: keep trying
                log.warning("cache invalidations: lost Redis (%r); retrying in %.1fs", error, self._backoff)
            self.forget(None, None)  # anything may have changed unheard
            await asyncio.sleep(self._backoff)
            self._backoff = min(self._backoff * 2, _BACKOFF_MAX_SECONDS)

    async def _listen(self) -> None:
        # A client of its own: a subscription holds its connection for good,
        # which must not take a slot of the pool that requests share.
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(self.redis_url)
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(redis_key("cache", "invalidate"))
            _raise_if_cancelled()
            pinged = False
            while True:
                message = await pubsub.get_message(timeout=_IDLE_PING_SECONDS)
                _raise_if_cancelled()
                if message is None:
                    if pinged:  # a half-open connection never errors by itself
                        raise ConnectionError("Redis did not answer a ping")
                    await pubsub.ping()
                    pinged = True
                    continue
                pinged = False
                self._on_message(message)
        finally:
            self.subscribed = False
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            with contextlib.suppress(Exception):
                await client.aclose()

    def _on_message(self, message: dict[str, Any]) -> None:
        if message["type"] == "subscribe":  # also after redis-py reconnected by itself
            self.forget(None, None)
            self.subscribed = True
            self._backoff = _BACKOFF_FIRST_SECONDS
            return
        if message["type"] != "message":
            return
        try:
            doc = orjson.loads(message["data"])
            origin, tenant_id, key = doc["origin"], doc["tenant"], doc["key"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("cache invalidations: ignored a malformed message %r", message["data"][:200])
            return
        if origin != self.origin:
            self.forget(tenant_id, key)
            if key is None:  # a purge: its vectors are deleted too, so this process drops them
                from cachestore.semantic_index import semantic_index

                semantic_index().drop_tenant(tenant_id)


# --- The process's store ----------------------------------------------------------


def build_store(
    backend: str | None = None, *, redis_url: str | None = None, lru_max_bytes: int | None = None
) -> LruStore:
    """A store as configured: `backend` "redis" or "database" (default: Redis
    when REDIS_URL is set), behind an LRU of CACHESTORE_LRU_MAX_BYTES."""
    url = settings.REDIS_URL if redis_url is None else redis_url
    backend = backend or ("redis" if url else "database")
    inner: CacheStore
    if backend == "redis":
        if not url:
            raise ValueError("the Redis cache backend needs REDIS_URL")
        inner = RedisStore(url)
    elif backend == "database":
        inner = DatabaseStore()
    else:
        raise ValueError(f"unknown cache backend {backend!r}")
    max_bytes = settings.CACHESTORE_LRU_MAX_BYTES if lru_max_bytes is None else lru_max_bytes
    return LruStore(inner, max_bytes=max_bytes, redis_url=url)


_store: LruStore | None = None


def cache_store() -> LruStore:
    """The process-wide store: LRU over Redis when REDIS_URL is set, else over the database."""
    global _store
    if _store is None:
        _store = build_store()
    return _store


def _raise_if_cancelled() -> None:
    """redis-py (8.1) can swallow a cancellation that lands while it connects or
    subscribes, and the listener would then read on for up to _IDLE_PING_SECONDS:
    a shutdown, or an event loop closing its tasks, waited that long or forever."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def invalidation_listener_start() -> None:
    """Once per process, from the first request's loop (gateway.lifecycle)."""
    if settings.REDIS_URL:
        cache_store().start_listener()
    cache_store().start_background()  # the LRU warmed from the most hit entries, hit counts written


@receiver(setting_changed)
def _store_rebuilt_on_setting_change(*, setting: str, **kwargs: Any) -> None:
    # Tests change these with the `settings` fixture; the next call builds anew.
    global _store
    if setting in {"REDIS_URL", "REDIS_KEY_PREFIX", "CACHESTORE_LRU_MAX_BYTES"}:
        _store = None
