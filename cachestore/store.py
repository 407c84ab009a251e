"""Where cache entries live. The request path talks to `cache_store()` only.

Backends: the database (default; works in the embedded run; cachestore.db_store)
and Redis (when REDIS_URL is set; cachestore.redis_store), each behind an
in-process LRU (cachestore.lru_store). Entries are always scoped to a tenant:
the key is derived from the tenant id, and purge and stats take the tenant.
Every read checks what it decoded (cachestore.backend.entry_checked), so a
mix-up anywhere below can only ever cost a miss.
"""

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from cachestore.backend import CacheStore
from cachestore.db_store import DatabaseStore
from cachestore.lru_store import LruStore
from cachestore.redis_store import RedisStore


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
