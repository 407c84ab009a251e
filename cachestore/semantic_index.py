"""The semantic cache's vector index: in-process, over vectors kept in the database.

Each process holds every live vector in memory, grouped by partition
(cachestore.semantic_keys: tenant, endpoint, resolved model, parameters...),
and finds the nearest earlier question by one matrix product over the
partition's unit vectors: exact cosine similarity, no approximation to
tune, and a partition's search never sees another tenant's vectors.

Why numpy and not an approximate index (HNSW): a partition holds one
tenant's questions for one model and one set of parameters, rarely more
than some tens of thousands, where an exact product is a few milliseconds
(bench/semantic_index.py) and needs no graph to rebuild, delete from or
keep in step across processes. Exact search also never misses the match
an approximate one could skip.

In step across processes: the first lookup (or the start-up task,
`semantic_index_start`) loads every live row; afterwards a lookup that
finds the index older than CACHESTORE_SEMANTIC_SYNC_SECONDS starts a
catch-up in the background (rows newer by id, or created since the last
catch-up, for rows whose transaction committed out of id order) and is
answered from what is loaded: no request waits on the database once warm.
A process's own writes are in its index at once.
"""

import asyncio
import contextvars
import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection

log = logging.getLogger(__name__)

_FLOAT = np.float32
_FIRST_CAPACITY = 16
_CATCH_UP_SLACK_SECONDS = 10.0  # rows committed this long after their creation time are still caught
_SEARCH_IN_THREAD_ABOVE = 20_000  # vectors: a larger product is computed off the event loop


def unit_vector(values: Any) -> "np.ndarray[Any, np.dtype[np.float32]] | None":
    """`values` as a float32 unit vector, or None (empty, not finite, or zero)."""
    try:
        vector = np.asarray(values, dtype=_FLOAT).ravel()
    except (TypeError, ValueError):
        return None
    norm = float(np.linalg.norm(vector)) if vector.size else 0.0
    if not vector.size or not np.isfinite(norm) or norm == 0.0:
        return None
    return vector / _FLOAT(norm)


@dataclass(frozen=True, slots=True)
class Nearest:
    entry_key: str
    similarity: float


class Partition:
    """The unit vectors of one partition, with their entry keys and expiry
    times, in arrays that grow by doubling."""

    def __init__(self, dims: int) -> None:
        self.dims = dims
        self.count = 0
        self.vectors = np.empty((_FIRST_CAPACITY, dims), dtype=_FLOAT)
        self.expires = np.empty(_FIRST_CAPACITY, dtype=np.float64)
        self.keys: list[str] = []

    def add(self, vector: "np.ndarray[Any, np.dtype[np.float32]]", entry_key: str, expires_at: float) -> None:
        if self.count == len(self.vectors):
            self._compact(time.time())
        if self.count == len(self.vectors):
            self.vectors = np.resize(self.vectors, (2 * len(self.vectors), self.dims))
            self.expires = np.resize(self.expires, 2 * len(self.expires))
        self.vectors[self.count] = vector
        self.expires[self.count] = expires_at
        self.keys.append(entry_key)
        self.count += 1

    def _compact(self, now: float) -> None:
        """Drop expired vectors (before growing: the index holds live ones only)."""
        live = np.flatnonzero(self.expires[: self.count] > now)
        if len(live) == self.count:
            return
        kept = len(live)
        self.vectors[:kept] = self.vectors[live]
        self.expires[:kept] = self.expires[live]
        self.keys = [self.keys[i] for i in live]
        self.count = kept

    def view(self) -> tuple["np.ndarray[Any, Any]", "np.ndarray[Any, Any]", list[str]]:
        """What a search reads: later appends write past `count` or into new arrays."""
        return self.vectors[: self.count], self.expires[: self.count], self.keys


def nearest_in(
    vectors: "np.ndarray[Any, Any]", expires: "np.ndarray[Any, Any]", keys: list[str], query: Any, now: float
) -> Nearest | None:
    """The live vector most similar to `query` (a unit vector), or None."""
    if not len(vectors):
        return None
    scores = vectors @ query
    scores[expires <= now] = -np.inf
    best = int(np.argmax(scores))
    if not np.isfinite(scores[best]):
        return None
    return Nearest(keys[best], float(scores[best]))


class SemanticIndex:
    """Every live vector of the database, by (tenant, partition)."""

    def __init__(self) -> None:
        self.partitions: dict[tuple[int, str], Partition] = {}
        self.known_ids: set[int] = set()
        self.watermark = 0  # the highest row id loaded
        self.synced_at = 0.0  # time.time() when the last load or catch-up started
        self._lock = threading.Lock()  # the admin's and tests' loops in other threads share the index
        self._loading: asyncio.Task[None] | None = None
        self._catching_up: asyncio.Task[None] | None = None
        self.loaded = False

    def __len__(self) -> int:
        return sum(p.count for p in self.partitions.values())

    async def nearest(self, tenant_id: int, partition: str, query: Any) -> Nearest | None:
        """The nearest live question of this tenant's partition (None: none yet)."""
        await self.ready()
        self._catch_up_when_due()
        with self._lock:
            found = self.partitions.get((tenant_id, partition))
            if found is None or found.dims != len(query):
                return None
            vectors, expires, keys = found.view()
        if len(vectors) > _SEARCH_IN_THREAD_ABOVE:  # numpy lets go of the GIL for the product
            return await asyncio.to_thread(nearest_in, vectors, expires, keys, query, time.time())
        return nearest_in(vectors, expires, keys, query, time.time())

    def put(self, row_id: int, tenant_id: int, partition: str, entry_key: str, vector: Any, expires_at: float) -> None:
        with self._lock:
            if row_id in self.known_ids:
                return
            self.known_ids.add(row_id)
            self.watermark = max(self.watermark, row_id)
            found = self.partitions.get((tenant_id, partition))
            if found is None or found.dims != len(vector):  # a re-pointed embedding model: its new size wins
                found = self.partitions[(tenant_id, partition)] = Partition(len(vector))
            found.add(vector, entry_key, expires_at)

    async def add(
        self, tenant_id: int, partition: str, entry_key: str, vector: Any, *, created_at: float, expires_at: float
    ) -> None:
        """Store a question's vector (its row first, so other processes load it) and index it here."""
        row_id = await sync_to_async(_insert, thread_sensitive=False)(
            tenant_id, partition, entry_key, vector, created_at, expires_at
        )
        self.put(row_id, tenant_id, partition, entry_key, vector, expires_at)

    def drop_tenant(self, tenant_id: int | None) -> None:
        """Forget a tenant's vectors (None: all) in this process; their rows are deleted by the caller."""
        with self._lock:
            for item in [item for item in self.partitions if tenant_id is None or item[0] == tenant_id]:
                del self.partitions[item]

    # --- loading and catching up ---

    async def ready(self) -> None:
        """Loaded once: the first caller starts the load, every caller waits for it."""
        if self.loaded:
            return
        if not _usable(self._loading):
            self._loading = _background(self._load(catch_up=False))
        assert self._loading is not None
        await asyncio.shield(self._loading)

    def _catch_up_when_due(self) -> None:
        if time.time() - self.synced_at < settings.CACHESTORE_SEMANTIC_SYNC_SECONDS:
            return
        if _usable(self._catching_up):
            return
        self._catching_up = _background(self._load(catch_up=True))

    async def _load(self, *, catch_up: bool) -> None:
        started = time.time()
        since = self.synced_at - _CATCH_UP_SLACK_SECONDS if catch_up else None
        try:
            rows = await sync_to_async(_live_rows, thread_sensitive=False)(self.watermark if catch_up else 0, since)
        except Exception:  # the database restarting: serve what is loaded, try again at the next interval
            log.warning("semantic cache: vectors could not be loaded", exc_info=True)
            self.synced_at = started
            if not catch_up:
                raise
            return
        for row_id, tenant_id, partition, entry_key, raw, expires_at in rows:
            self.put(row_id, tenant_id, partition, entry_key, np.frombuffer(bytes(raw), dtype=_FLOAT), expires_at)
        self.synced_at = started
        self.loaded = True


def _usable(task: "asyncio.Task[None] | None") -> bool:
    """A task still running on this loop (one of a loop that is gone, or done, is not)."""
    return task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop()


def _background(coro: Any) -> "asyncio.Task[None]":
    # A fresh context: the load outlives (and must not keep alive) the request that started it.
    return asyncio.get_running_loop().create_task(coro, context=contextvars.Context())


def _when(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC)


def _released(fn: Any) -> Any:
    def run(*args: Any) -> Any:
        try:
            return fn(*args)
        finally:
            if not connection.in_atomic_block:  # as cachestore.db_store.release_connection
                connection.close()

    return run


@_released
def _insert(tenant_id: int, partition: str, entry_key: str, vector: Any, created_at: float, expires_at: float) -> int:
    from cachestore.models import SemanticVector

    row = SemanticVector.objects.create(
        tenant_id=tenant_id,
        partition=partition,
        entry_key=entry_key,
        vector=np.asarray(vector, dtype=_FLOAT).tobytes(),
        created_at=_when(created_at),
        expires_at=_when(expires_at),
    )
    return int(row.pk)


@_released
def _live_rows(after_id: int, created_since: float | None) -> list[tuple[int, int, str, str, Any, float]]:
    from django.db.models import Q

    from cachestore.models import SemanticVector

    now = dt.datetime.now(dt.UTC)
    newer = Q(pk__gt=after_id)
    if created_since is not None:
        newer |= Q(created_at__gte=_when(created_since))
    rows = SemanticVector.objects.filter(newer, expires_at__gt=now).order_by("pk")
    return [
        (pk, tenant_id, partition, key, raw, expires.timestamp())
        for pk, tenant_id, partition, key, raw, expires in rows.values_list(
            "pk", "tenant_id", "partition", "entry_key", "vector", "expires_at"
        ).iterator(chunk_size=2000)
    ]


_index: SemanticIndex | None = None


def semantic_index() -> SemanticIndex:
    """The process's index (built empty; loaded by the first lookup or at start-up)."""
    global _index
    if _index is None:
        _index = SemanticIndex()
    return _index


def semantic_index_reset() -> None:
    """Tests: the next call builds a new index, loaded from the database."""
    global _index
    _index = None


def semantic_index_start() -> None:
    """At start-up (gateway.lifecycle): load the vectors in the background,
    so the first semantic lookup finds the index ready."""
    index = semantic_index()
    if not index.loaded and not _usable(index._loading):
        index._loading = _background(index._load(catch_up=False))
        index._loading.add_done_callback(_log_failure)


def _log_failure(task: "asyncio.Task[None]") -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("semantic cache: the start-up load failed; the first lookup tries again")
