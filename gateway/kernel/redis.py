"""One asyncio Redis client per event loop, shared by every part that uses Redis.

redis-py is imported on first use, never at start-up: it is 6 MB of every
process's memory, and a gateway without REDIS_URL never needs it."""

import asyncio
import weakref
from typing import TYPE_CHECKING

from django.conf import settings

if TYPE_CHECKING:
    import redis.asyncio as aioredis

REDIS_MAX_CONNECTIONS = 256  # per process and event loop

_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, aioredis.Redis]]" = (
    weakref.WeakKeyDictionary()
)


def redis_client() -> "aioredis.Redis":
    return redis_client_for(settings.REDIS_URL)


def redis_client_for(url: str) -> "aioredis.Redis":
    import redis.asyncio as aioredis

    loop = asyncio.get_running_loop()
    by_url = _clients.setdefault(loop, {})
    client = by_url.get(url)
    if client is None:
        # redis-py's default pool raises past 100 connections; under a burst
        # a request should wait a moment for a connection, not fail.
        # A cut or hung Redis fails within REDIS_TIMEOUT_SECONDS, so the
        # request gets a quick 503 backend_unavailable, never a hang.
        timeout = settings.REDIS_TIMEOUT_SECONDS
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=REDIS_MAX_CONNECTIONS,
            timeout=5,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
        client = by_url[url] = aioredis.Redis(connection_pool=pool)
    return client


def redis_key(*parts: object) -> str:
    """A key in the gateway's namespace (REDIS_KEY_PREFIX)."""
    return ":".join([settings.REDIS_KEY_PREFIX, *map(str, parts)])


def redis_failed(exc: BaseException) -> bool:
    """Whether `exc` says Redis could not be reached or did not answer in time."""
    import redis

    return isinstance(exc, (redis.RedisError, OSError, TimeoutError))
