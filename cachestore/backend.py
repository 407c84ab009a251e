"""What every cache backend is, and the check every read makes.

Every backend stores `entry_dumps` bytes, and every read checks that the
entry it decoded is the tenant's, under that key, and still fresh, so a
mix-up anywhere below can only ever cost a miss.
"""

import logging
import time
from typing import Protocol

from cachestore.entry import CachedEntry, entry_loads

log = logging.getLogger(__name__)


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


def entry_checked(raw: bytes, tenant_id: int, key: str) -> CachedEntry | None:
    """The entry in `raw` if it is this tenant's, under this key, and fresh."""
    try:
        entry = entry_loads(raw)
    except Exception:  # written by another version of the format: a miss, not an error
        log.warning("unreadable cache entry for tenant %s", tenant_id, exc_info=True)
        return None
    if entry.tenant_id != tenant_id or entry.key != key or not entry.is_fresh(time.time()):
        return None
    return entry
