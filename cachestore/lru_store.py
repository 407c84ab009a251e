"""The LRU store: a process's LRU in front of a backend, kept honest across processes.

With REDIS_URL set, `set` and `purge` publish an invalidation, and a
listener in every process drops what others replaced or purged.
"""

import asyncio
import contextlib
import contextvars
import logging
import time
import uuid
from typing import Any

import orjson
from django.conf import settings

from cachestore.backend import CacheStore
from cachestore.entry import CachedEntry
from cachestore.lru import Lru
from gateway.kernel.redis import redis_client_for, redis_key

log = logging.getLogger(__name__)


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


def _raise_if_cancelled() -> None:
    """redis-py (8.1) can swallow a cancellation that lands while it connects or
    subscribes, and the listener would then read on for up to _IDLE_PING_SECONDS:
    a shutdown, or an event loop closing its tasks, waited that long or forever."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
