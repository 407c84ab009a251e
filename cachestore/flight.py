"""Singleflight: identical requests in flight wait for the first one's answer.

Within a process the first request for a key leads and the others await its
future. Across processes (with Redis) the leader also holds a short lock;
a request in another process that finds the lock taken polls the store for
the leader's entry instead of going upstream itself. A leader that fails
(an error, a cut-off stream) hands its followers None, and they go upstream.
A leader whose answer is an earlier one it found by meaning (the semantic
cache) hands that on with its similarity, so that its followers say so too.
"""

import asyncio
import contextvars
import logging
import time
import uuid
import weakref
from dataclasses import dataclass, field

from django.conf import settings

from cachestore.backend import CacheStore
from cachestore.entry import CachedEntry
from cachestore.lru_store import LruStore
from gateway.kernel.redis import redis_client, redis_key

log = logging.getLogger(__name__)
_LOCK_MS = 30_000  # a leader that died frees its key after this long
_POLL_SECONDS = 0.05

_pending_writes: set[asyncio.Task[None]] = set()


@dataclass(frozen=True, slots=True)
class Landed:
    """What a leader hands its followers: the entry, and the similarity of
    the semantic match that found it (None: the leader's own answer, or an
    exact hit)."""

    entry: CachedEntry
    similarity: float | None = None


_flights: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Future[Landed | None]]]" = (
    weakref.WeakKeyDictionary()
)


@dataclass
class Flight:
    """The leader's side: resolve exactly once, with the entry or None."""

    tenant_id: int
    key: str
    future: asyncio.Future[Landed | None]
    store: CacheStore
    lock_token: str | None = None
    write: bool = True
    done: bool = field(default=False)

    def land(self, entry: CachedEntry | None, *, similarity: float | None = None) -> None:
        """Hand the answer to local followers now (`similarity`: a semantic
        match's, which they are served as); store it and free the key in the
        background (other processes wait on the store, so the lock goes only
        once the entry is written)."""
        if self.done:
            return
        self.done = True
        flights = _flights.get(self.future.get_loop(), {})
        if flights.get(self.key) is self.future:
            del flights[self.key]
        if not self.future.done():
            self.future.set_result(None if entry is None else Landed(entry, similarity))
        if entry is not None and self.write and isinstance(self.store, LruStore):
            self.store.remember(entry)
        # A fresh context: the write outlives the request, and must not run in
        # (and keep alive) the request's thread-sensitive context.
        task = asyncio.get_running_loop().create_task(self._store_then_unlock(entry), context=contextvars.Context())
        _pending_writes.add(task)
        task.add_done_callback(_pending_writes.discard)

    async def _store_then_unlock(self, entry: CachedEntry | None) -> None:
        try:
            if entry is not None and self.write:
                await self.store.set(entry)
        except Exception:
            log.exception("could not store a cache entry")
        finally:
            if self.lock_token is not None:
                await _unlock(self.key, self.lock_token)


async def lead_or_follow(store: CacheStore, tenant_id: int, key: str) -> Flight | Landed | None:
    """A Flight to lead, or what the leader produced (an entry, or None when
    it failed or took longer than CACHESTORE_SINGLEFLIGHT_WAIT_SECONDS)."""
    loop = asyncio.get_running_loop()
    flights = _flights.setdefault(loop, {})
    waiting = flights.get(key)
    if waiting is not None and not waiting.done():
        return await _wait(waiting)
    future: asyncio.Future[Landed | None] = loop.create_future()
    flights[key] = future
    flight = Flight(tenant_id=tenant_id, key=key, future=future, store=store)
    if settings.REDIS_URL:
        try:
            flight.lock_token = uuid.uuid4().hex
            if not await redis_client().set(redis_key("cache", "lock", key), flight.lock_token, nx=True, px=_LOCK_MS):
                flight.lock_token = None
                entry = await _wait_for_other_process(store, tenant_id, key)
                if entry is not None:  # local followers get it too
                    flight.write = False
                    flight.land(entry)
                    return Landed(entry)
        except BaseException:  # cancelled, or Redis failed: never leave followers waiting
            flight.land(None)
            raise
    return flight


async def _wait(future: asyncio.Future[Landed | None]) -> Landed | None:
    try:
        return await asyncio.wait_for(asyncio.shield(future), settings.CACHESTORE_SINGLEFLIGHT_WAIT_SECONDS)
    except TimeoutError:
        return None


async def _wait_for_other_process(store: CacheStore, tenant_id: int, key: str) -> CachedEntry | None:
    deadline = time.monotonic() + settings.CACHESTORE_SINGLEFLIGHT_WAIT_SECONDS
    lock = redis_key("cache", "lock", key)
    while time.monotonic() < deadline:
        entry = await store.get(tenant_id, key)
        if entry is not None:
            return entry
        if not await redis_client().exists(lock):
            return await store.get(tenant_id, key)  # the leader finished (or failed)
        await asyncio.sleep(_POLL_SECONDS)
    return None


_UNLOCK = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


async def _unlock(key: str, token: str) -> None:
    try:  # only our own lock: it may have expired and been taken since
        await redis_client().eval(_UNLOCK, 1, redis_key("cache", "lock", key), token)
    except Exception:
        log.warning("could not release a cache lock", exc_info=True)


async def writes_settled() -> None:
    """Shutdown and tests: wait for entries being stored."""
    if _pending_writes:
        await asyncio.gather(*list(_pending_writes), return_exceptions=True)
