"""The in-process LRU: entries by (tenant, key), bounded by the bytes they hold."""

import threading
from collections import OrderedDict

from cachestore.entry import CachedEntry


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
