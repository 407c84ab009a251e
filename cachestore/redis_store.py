"""The Redis backend (when REDIS_URL is set): values that expire by themselves,
plus a per-tenant index for stats and purge, and sorted sets of hits."""

import hashlib
import math
import re
import time
from collections.abc import Sequence
from typing import Any

from cachestore.backend import entry_checked
from cachestore.entry import CachedEntry, entry_dumps
from gateway.kernel.redis import redis_client_for, redis_key


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
        return None if raw is None else entry_checked(raw, tenant_id, key)

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
        found = [entry_checked(raw, t, k) for raw, (t, k) in zip(raws, wanted, strict=True) if raw is not None]
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
