"""The cache's storage: each backend keeps entries whole, per tenant, until they expire; the LRU in front stays honest.

The store is async; each test drives one scenario through `async_to_sync`,
so the database backend's `sync_to_async` work runs on the test's own
thread and connection and sees the tenants the test created inside its
transaction. Redis tests use database 15 and a key prefix of their own.
"""

import asyncio
import hashlib
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
import redis
from asgiref.sync import async_to_sync

from accounts.services import tenant_create
from cachestore.entry import CachedEntry, entry_dumps
from cachestore.lru_store import LruStore
from cachestore.models import CacheEntryRecord
from cachestore.redis_store import RedisStore
from cachestore.store import build_store
from gateway.kernel.context import Usage
from gateway.kernel.redis import redis_client_for, redis_key

pytestmark = pytest.mark.django_db

REDIS_URL = "redis://127.0.0.1:6379/15"
T = TypeVar("T")


def redis_reachable() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping())
    except redis.ConnectionError:
        return False


@pytest.fixture
def redis_prefix(settings: Any) -> Iterator[str]:
    """A key prefix of this test's own, so runs and tests never collide; its keys are deleted after."""
    settings.REDIS_KEY_PREFIX = f"cachetest-{uuid.uuid4().hex[:12]}"
    yield settings.REDIS_KEY_PREFIX
    if redis_reachable():
        client = redis.Redis.from_url(REDIS_URL)
        leftovers = list(client.scan_iter(match=f"{settings.REDIS_KEY_PREFIX}:*"))
        if leftovers:
            client.unlink(*leftovers)


@pytest.fixture(params=["database", "redis"])
def backend(request: pytest.FixtureRequest, redis_prefix: str) -> str:
    if request.param == "redis" and not redis_reachable():
        pytest.skip("no Redis on 127.0.0.1:6379")
    return request.param


@pytest.fixture
def with_redis(redis_prefix: str) -> None:
    if not redis_reachable():
        pytest.skip("no Redis on 127.0.0.1:6379")


@pytest.fixture
def tenants() -> tuple[int, int]:
    return tenant_create(slug="cache-a").pk, tenant_create(slug="cache-b").pk


def store_for(backend: str, **options: Any) -> LruStore:
    """A store as one process would have it (a second call: another process)."""
    return build_store(backend, redis_url=REDIS_URL if backend == "redis" else "", **options)


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    """One event loop per test; its Redis client is closed with it."""

    async def scenario_then_close() -> T:
        try:
            return await scenario()
        finally:
            await redis_client_for(REDIS_URL).aclose()

    return async_to_sync(scenario_then_close)()


def key_for(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def make_entry(
    tenant_id: int, name: str = "q", *, ttl: float = 60.0, body: bytes | None = None, **changes: Any
) -> CachedEntry:
    now = time.time()
    answer = b'{"id":"chatcmpl-1","choices":[{"message":{"content":"' + name.encode() + b'"}}]}'
    fields: dict[str, Any] = {
        "tenant_id": tenant_id,
        "key": key_for(name),
        "endpoint": "chat.completions",
        "model": "gpt-test",
        "body": answer if body is None else body,
        "usage": Usage(input_tokens=12, output_tokens=20, cached_input_tokens=3),
        "cost_nanos": 13_800,
        "created_at": now,
        "expires_at": now + ttl,
        "price_id": 7,
    }
    return CachedEntry(**{**fields, **changes})


def stored_payload(backend: str, entry: CachedEntry) -> bytes:
    if backend == "database":
        return bytes(CacheEntryRecord.objects.get(key=entry.key).payload)
    raw = redis.Redis.from_url(REDIS_URL).get(RedisStore.value_key(entry.tenant_id, entry.key))
    assert isinstance(raw, bytes)
    return raw


class GetSpy:
    """Counts the backend reads behind an LRU store."""

    def __init__(self, store: LruStore, fail: bool = False, during: Callable[[], None] | None = None) -> None:
        self.calls = 0
        self.fail = fail
        self.during = during
        self.inner = store.backend.get
        store.backend.get = self  # type: ignore[method-assign]

    async def __call__(self, tenant_id: int, key: str) -> CachedEntry | None:
        self.calls += 1
        if self.fail:
            raise ConnectionError("backend down")
        found = await self.inner(tenant_id, key)
        if self.during is not None:
            self.during()
        return found


async def eventually(condition: Callable[[], bool], timeout: float = 1.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def filled(store: LruStore, tenant_id: int, key: str) -> bool:
    """Read until the entry is held in the store's LRU: a read that raced an
    invalidation (even the set's own, arriving late) does not fill it."""
    deadline = time.monotonic() + 1.0
    while (tenant_id, key) not in store.lru:
        if time.monotonic() > deadline:
            return False
        await store.get(tenant_id, key)
        await asyncio.sleep(0.01)
    return True


# --- every backend --------------------------------------------------------------------


def test_an_entry_set_comes_back_equal_from_another_process(backend: str, tenants: tuple[int, int]) -> None:
    a, _ = tenants
    events = (b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n', b"data: [DONE]\n\n")
    entry = make_entry(a, events=events)

    async def scenario() -> CachedEntry | None:
        await store_for(backend).set(entry)
        return await store_for(backend).get(a, entry.key)  # an empty LRU: read from the backend

    found = run(scenario)
    assert found == entry
    assert found is not None and (found.body, found.events, found.usage) == (entry.body, events, entry.usage)
    assert (found.cost_nanos, found.price_id, found.content_type) == (13_800, 7, "application/json")


def test_an_expired_entry_is_a_miss(backend: str, tenants: tuple[int, int]) -> None:
    a, _ = tenants
    short = make_entry(a, "short", ttl=0.2)
    stale = make_entry(a, "stale", ttl=-1.0)

    async def scenario() -> tuple[Any, ...]:
        store = store_for(backend)
        await store.set(short)
        await store.set(stale)
        before = await store_for(backend).get(a, short.key)
        deadline = time.monotonic() + 2
        while await store.get(a, short.key) is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)  # until its 0.2 s have passed
        return (
            before,
            await store.get(a, short.key),
            await store_for(backend).get(a, short.key),
            await store.get(a, stale.key),
        )

    before, from_lru, from_backend, already_stale = run(scenario)
    assert before == short
    assert (from_lru, from_backend, already_stale) == (None, None, None)


def test_a_tenants_key_is_never_visible_to_another_tenant(backend: str, tenants: tuple[int, int]) -> None:
    a, b = tenants
    entry = make_entry(a)

    async def scenario() -> tuple[Any, ...]:
        store = store_for(backend)
        await store.set(entry)
        return await store.get(b, entry.key), await store_for(backend).get(b, entry.key), await store.get(a, entry.key)

    same_process, other_process, owner = run(scenario)
    assert (same_process, other_process) == (None, None)
    assert owner == entry


def test_purge_removes_only_that_tenants_entries_and_returns_the_count(backend: str, tenants: tuple[int, int]) -> None:
    a, b = tenants
    mine = [make_entry(a, "one"), make_entry(a, "two")]
    theirs = make_entry(b, "their one")

    async def scenario() -> tuple[Any, ...]:
        store = store_for(backend)
        for entry in (*mine, theirs, make_entry(a, "expired", ttl=-1.0)):
            await store.set(entry)
        purged = await store.purge(a)
        gone = [await s.get(a, e.key) for s in (store, store_for(backend)) for e in mine]
        return purged, gone, await store_for(backend).get(b, theirs.key), await store.stats(a)

    purged, gone, kept, stats_after = run(scenario)
    assert purged == 2  # the expired entry was no longer an entry
    assert gone == [None] * 4
    assert kept == theirs
    assert stats_after == {"entries": 0, "size_bytes": 0}


def test_purging_every_tenant_counts_every_entry(backend: str, tenants: tuple[int, int]) -> None:
    a, b = tenants

    async def scenario() -> tuple[Any, ...]:
        store = store_for(backend)
        before = await store.stats(None)
        for entry in (make_entry(a, "one"), make_entry(a, "two"), make_entry(b, "their one")):
            await store.set(entry)
        purged = await store.purge(None)
        return before, purged, await store.stats(None), await store_for(backend).get(b, key_for("their one"))

    before, purged, after, gone = run(scenario)
    assert purged == before["entries"] + 3
    assert after == {"entries": 0, "size_bytes": 0}
    assert gone is None


def test_purging_every_tenant_in_redis_leaves_the_singleflight_locks_alone(
    with_redis: None, tenants: tuple[int, int]
) -> None:
    a, _ = tenants
    lock = redis_key("cache", "lock", key_for("in flight"))  # shares the cache's namespace

    async def scenario() -> tuple[Any, ...]:
        await redis_client_for(REDIS_URL).set(lock, "leader", px=60_000)
        await store_for("redis").set(make_entry(a))
        return await store_for("redis").purge(None), await redis_client_for(REDIS_URL).get(lock)

    assert run(scenario) == (1, b"leader")


def test_stats_count_a_tenants_fresh_entries_and_their_stored_bytes(backend: str, tenants: tuple[int, int]) -> None:
    a, b = tenants
    mine = [make_entry(a, "one"), make_entry(a, "two", body=b'{"a":"' + b"x" * 300 + b'"}')]
    theirs = make_entry(b, "their one")

    async def scenario() -> tuple[Any, ...]:
        store = store_for(backend)
        before = await store.stats(None)
        for entry in (*mine, theirs, make_entry(a, "soon", ttl=0.1)):
            await store.set(entry)
        await store.set(mine[0])  # replacing an entry does not count it twice
        deadline = time.monotonic() + 2
        while (await store.stats(a))["entries"] > 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)  # until "soon" has expired
        return before, await store.stats(a), await store.stats(b), await store.stats(None)

    before, of_a, of_b, of_all = run(scenario)
    assert of_a == {"entries": 2, "size_bytes": sum(len(entry_dumps(e)) for e in mine)}
    assert of_b == {"entries": 1, "size_bytes": len(entry_dumps(theirs))}
    assert of_all == {
        "entries": before["entries"] + 3,
        "size_bytes": before["size_bytes"] + of_a["size_bytes"] + of_b["size_bytes"],
    }


def test_a_large_entry_is_stored_compressed_and_comes_back_whole(backend: str, tenants: tuple[int, int]) -> None:
    a, _ = tenants
    text = " ".join(f"word{i % 97}" for i in range(4000)).encode()
    entry = make_entry(
        a, body=b'{"choices":[{"message":{"content":"' + text + b'"}}]}', events=(b"data: " + text + b"\n\n",)
    )

    async def scenario() -> CachedEntry | None:
        await store_for(backend).set(entry)
        return await store_for(backend).get(a, entry.key)

    assert run(scenario) == entry
    payload = stored_payload(backend, entry)
    assert payload[:1] == b"z"
    assert len(payload) < len(entry.body) // 4


# --- the LRU in front ------------------------------------------------------------------


def test_the_lru_serves_a_second_read_without_asking_the_backend(backend: str, tenants: tuple[int, int]) -> None:
    a, _ = tenants
    entry = make_entry(a)

    async def scenario() -> tuple[Any, ...]:
        await store_for(backend).set(entry)
        store = store_for(backend)
        spy = GetSpy(store)
        first, second = await store.get(a, entry.key), await store.get(a, entry.key)
        return first, second, spy.calls

    first, second, backend_reads = run(scenario)
    assert first == entry and second is first
    assert backend_reads == 1


def test_an_entry_set_in_this_process_is_served_from_the_lru(backend: str, tenants: tuple[int, int]) -> None:
    a, _ = tenants
    entry = make_entry(a)

    async def scenario() -> tuple[Any, ...]:
        store = store_for(backend)
        spy = GetSpy(store)
        await store.set(entry)
        return await store.get(a, entry.key), spy.calls

    found, backend_reads = run(scenario)
    assert found is entry
    assert backend_reads == 0


def test_the_lru_evicts_the_least_recently_used_entries_past_its_size(backend: str, tenants: tuple[int, int]) -> None:
    a, _ = tenants
    entries = [make_entry(a, f"q{i}") for i in range(5)]  # equal sizes: "q0" .. "q4"
    footprint = len(entries[0].body) + 512

    async def scenario() -> tuple[Any, ...]:
        store = store_for(backend, lru_max_bytes=4 * footprint)  # room for four
        spy = GetSpy(store)
        for entry in entries[:4]:
            await store.set(entry)
        await store.get(a, entries[0].key)  # q0 is now the most recently used: q1 goes next
        await store.set(entries[4])
        held = [(a, e.key) in store.lru for e in entries]
        reads_before = spy.calls
        refetched = await store.get(a, entries[1].key)
        return held, store.lru.size_bytes, reads_before, spy.calls, refetched

    held, size, reads_before, reads_after, refetched = run(scenario)
    assert held == [True, False, True, True, True]
    assert size == 4 * footprint
    assert (reads_before, reads_after) == (0, 1)  # the evicted entry came from the backend
    assert refetched == entries[1]


def test_an_entry_larger_than_a_quarter_of_the_lru_is_left_to_the_backend(
    backend: str, tenants: tuple[int, int]
) -> None:
    a, _ = tenants
    big = make_entry(a, "big", body=b'{"a":"' + b"x" * 5000 + b'"}')

    async def scenario() -> tuple[Any, ...]:
        store = store_for(backend, lru_max_bytes=16_000)
        spy = GetSpy(store)
        await store.set(big)
        return len(store.lru), await store.get(a, big.key), spy.calls

    held, found, backend_reads = run(scenario)
    assert held == 0
    assert found == big and backend_reads == 1


def test_a_read_that_raced_an_invalidation_does_not_fill_the_lru(backend: str, tenants: tuple[int, int]) -> None:
    a, _ = tenants
    entry = make_entry(a)

    async def scenario() -> tuple[Any, ...]:
        await store_for(backend).set(entry)
        store = store_for(backend)
        GetSpy(store, during=lambda: store.forget(a, None))  # a purge heard while the read was out
        return await store.get(a, entry.key), (a, entry.key) in store.lru

    found, held = run(scenario)
    assert found == entry  # this read was answered before the purge
    assert not held  # but what it read may be gone: it is not kept


def test_a_failing_backend_read_is_a_miss_not_an_error(backend: str, tenants: tuple[int, int]) -> None:
    a, _ = tenants

    async def scenario() -> tuple[Any, ...]:
        store = store_for(backend)
        spy = GetSpy(store, fail=True)
        return await store.get(a, key_for("anything")), spy.calls

    assert run(scenario) == (None, 1)


# --- several processes on one Redis -----------------------------------------------------


def test_a_purge_in_one_process_empties_the_other_processes_lru_within_a_second(
    with_redis: None, tenants: tuple[int, int]
) -> None:
    a, _ = tenants
    entry = make_entry(a)

    async def scenario() -> tuple[Any, ...]:
        purging, serving = store_for("redis"), store_for("redis")  # as two processes sharing Redis
        serving.start_listener()
        try:
            assert await eventually(lambda: serving.subscribed, timeout=3)
            await purging.set(entry)
            held = await filled(serving, a, entry.key)
            await purging.purge(a)
            dropped = await eventually(lambda: (a, entry.key) not in serving.lru)
            return held, dropped, await serving.get(a, entry.key)
        finally:
            await serving.stop_listener()

    held, dropped, after = run(scenario)
    assert held
    assert dropped
    assert after is None


def test_an_entry_replaced_in_one_process_is_dropped_from_the_others_lru_but_not_its_own(
    with_redis: None, tenants: tuple[int, int]
) -> None:
    a, _ = tenants
    old, new = make_entry(a, body=b'{"v":1}'), make_entry(a, body=b'{"v":2}')

    async def scenario() -> tuple[Any, ...]:
        writing, serving = store_for("redis"), store_for("redis")
        for store in (writing, serving):
            store.start_listener()
        try:
            assert await eventually(lambda: writing.subscribed and serving.subscribed, timeout=3)
            await writing.set(old)
            assert await filled(serving, a, old.key)
            await writing.set(new)
            dropped = await eventually(lambda: (a, new.key) not in serving.lru)
            await asyncio.sleep(0.1)  # the writer heard its own message by now, too
            return dropped, (a, new.key) in writing.lru, await serving.get(a, new.key)
        finally:
            for store in (writing, serving):
                await store.stop_listener()

    dropped, writer_kept, served = run(scenario)
    assert dropped and writer_kept
    assert served == new


def test_the_listener_resubscribes_after_its_connection_is_killed(with_redis: None, tenants: tuple[int, int]) -> None:
    a, _ = tenants
    entry = make_entry(a)
    name = f"cachetest-{uuid.uuid4().hex[:12]}"  # finds this test's connections, and only them
    serving_url = f"{REDIS_URL}?client_name={name}"

    async def scenario() -> tuple[Any, ...]:
        purging = store_for("redis")
        serving = build_store("redis", redis_url=serving_url)
        serving.start_listener()
        try:
            assert await eventually(lambda: serving.subscribed, timeout=3)
            await purging.set(entry)
            assert await filled(serving, a, entry.key)
            clients = await redis_client_for(REDIS_URL).client_list()
            pubsub_ids = [c["id"] for c in clients if c.get("name") == name and int(c.get("sub", 0)) > 0]
            for client_id in pubsub_ids:
                await redis_client_for(REDIS_URL).client_kill_filter(_id=client_id)
            # Reconnected: the LRU is emptied (invalidations may have been missed), then it listens again.
            emptied = await eventually(lambda: (a, entry.key) not in serving.lru, timeout=3)
            assert await eventually(lambda: serving.subscribed, timeout=5)
            assert await filled(serving, a, entry.key)
            await purging.purge(a)
            dropped = await eventually(lambda: (a, entry.key) not in serving.lru)
            return pubsub_ids, emptied, dropped
        finally:
            await serving.stop_listener()
            await redis_client_for(serving_url).aclose()

    pubsub_ids, emptied, dropped = run(scenario)
    assert len(pubsub_ids) == 1
    assert emptied and dropped


def test_starting_the_listener_twice_keeps_one_task(with_redis: None) -> None:
    async def scenario() -> tuple[Any, ...]:
        store = store_for("redis")
        first, second = store.start_listener(), store.start_listener()
        await store.stop_listener()
        return first, second, store_for("database").start_listener()

    first, second, without_redis = run(scenario)
    assert first is not None and first is second
    assert without_redis is None


def test_the_listener_stops_at_once_whenever_its_loop_closes(with_redis: None) -> None:
    """A cancellation that lands while redis-py connects or subscribes must still
    end the listener: a closing loop (asyncio.run, Django's sync test client, a
    shutdown) waits for it. Each step count lands the cancel at another point."""

    async def request_then_close(steps: int) -> None:
        store_for("redis").start_listener()
        for _ in range(steps):
            await asyncio.sleep(0)

    for steps in range(25):
        started = time.monotonic()
        asyncio.run(request_then_close(steps))
        assert time.monotonic() - started < 2.0, f"the loop waited for the listener (cancelled after {steps} steps)"


# --- popularity: hits counted, the most hit read back and warming a starting LRU ---------


def test_the_most_hit_entries_come_back_most_hit_first_per_tenant_and_overall(
    backend: str, tenants: tuple[int, int]
) -> None:
    a, b = tenants
    entries = {name: make_entry(a, name, request=f'{{"q":"{name}"}}'.encode()) for name in ("x", "y", "z")}
    other = make_entry(b, "w")

    async def scenario() -> tuple[list[str], list[str], list[str]]:
        store = store_for(backend)
        for entry in [*entries.values(), other]:
            await store.set(entry)
        for name, hits in (("x", 1), ("y", 3)):  # z is never hit
            for _ in range(hits):
                store.hit_count(a, entries[name].key)
        await store.hits_flush()
        for _ in range(5):
            store.hit_count(b, other.key)
        mine = await store.popular(a, 5)  # counts what this process has not written yet, too
        top = await store.popular(None, 2)
        return [e.key for e in mine], [e.key for e in top], [e.request.decode() for e in mine if e.request]

    mine, top, requests = run(scenario)
    assert mine == [entries["y"].key, entries["x"].key]
    assert top == [other.key, entries["y"].key]
    assert requests == ['{"q":"y"}', '{"q":"x"}']


def test_a_starting_process_warms_its_lru_with_the_most_hit_entries(backend: str, tenants: tuple[int, int]) -> None:
    a, _ = tenants
    hot, cold = make_entry(a, "hot"), make_entry(a, "cold")

    async def scenario() -> tuple[int, bool, int]:
        first = store_for(backend)
        await first.set(hot)
        await first.set(cold)
        first.hit_count(a, hot.key)
        await first.hits_flush()
        starting = store_for(backend)  # another process
        warmed = await starting.warm(10)
        reads = GetSpy(starting)
        served = await starting.get(a, hot.key)
        return warmed, served == hot and (a, cold.key) not in starting.lru, reads.calls

    assert run(scenario) == (1, True, 0)  # served from the LRU: no backend read


def test_hits_that_could_not_be_written_are_kept_for_the_next_flush(backend: str, tenants: tuple[int, int]) -> None:
    a, _ = tenants
    entry = make_entry(a, "kept")

    async def scenario() -> int:
        store = store_for(backend)
        await store.set(entry)
        store.hit_count(a, entry.key)
        written = store.backend.hits_add

        async def down(counts: dict[tuple[int, str], int]) -> None:
            raise ConnectionError("backend down")

        store.backend.hits_add = down  # type: ignore[method-assign]
        await store.hits_flush()
        store.backend.hits_add = written  # type: ignore[method-assign]
        store.hit_count(a, entry.key)
        await store.hits_flush()
        return len(await store.popular(a, 1))

    assert run(scenario) == 1
