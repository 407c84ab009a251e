"""The circuit breaker per deployment, in memory and shared through Redis."""

import asyncio
import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from proxy import breaker as breaker_module
from proxy.breaker import MIRROR_SECONDS, BreakerConfig, LocalBreaker, RedisBreaker, deployment_key, shared_state

REDIS_URL = "redis://127.0.0.1:6379/15"
CONFIG = BreakerConfig(failures=3, window=10.0, cooldown=30.0)
KEY = deployment_key(7)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def redis_settings(settings: Any) -> Iterator[Any]:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    settings.REDIS_URL = REDIS_URL
    settings.REDIS_KEY_PREFIX = f"test-breaker-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    yield settings
    client = redis.Redis.from_url(REDIS_URL)
    for name in client.scan_iter(settings.REDIS_KEY_PREFIX + ":*"):
        client.delete(name)


Make = Callable[[Clock], Any]


def local(clock: Clock) -> LocalBreaker:
    return LocalBreaker(CONFIG, clock=clock)


def shared(clock: Clock) -> RedisBreaker:
    return RedisBreaker(CONFIG, clock=clock)


@pytest.fixture(params=["local", "redis"])
def make(request: pytest.FixtureRequest) -> Make:
    if request.param == "redis":
        request.getfixturevalue("redis_settings")
        return shared
    return local


async def fail(breaker: Any, times: int, clock: Clock, every: float = 0.0) -> None:
    for _ in range(times):
        await breaker.record_failure(KEY)
        clock.advance(every)


def test_deployment_keys_name_the_deployment() -> None:
    assert deployment_key(12) == "dep:12"


async def test_a_circuit_opens_after_n_failures_within_the_window_and_is_skipped(make: Make) -> None:
    clock = Clock()
    breaker = make(clock)
    await fail(breaker, 2, clock, every=1)
    assert (await breaker.allow(KEY), breaker.state(KEY)) == (True, "closed")
    await fail(breaker, 1, clock)
    assert breaker.state(KEY) == "open"
    assert [await breaker.allow(KEY) for _ in range(3)] == [False, False, False]
    assert breaker.retry_in(KEY) == pytest.approx(30.0)


async def test_failures_spread_beyond_the_window_never_open_it(make: Make) -> None:
    clock = Clock()
    breaker = make(clock)
    await fail(breaker, 6, clock, every=5.0)  # never three within 10 s
    assert (breaker.state(KEY), await breaker.allow(KEY)) == ("closed", True)


async def test_after_the_cooldown_exactly_one_caller_probes_and_its_success_closes(make: Make) -> None:
    clock = Clock()
    breaker = make(clock)
    await fail(breaker, 3, clock)
    clock.advance(30)
    assert breaker.state(KEY) == "half_open"
    answers = await asyncio.gather(*(breaker.allow(KEY) for _ in range(10)))
    assert sorted(answers) == [False] * 9 + [True]
    await breaker.record_success(KEY)
    assert breaker.state(KEY) == "closed"
    assert [await breaker.allow(KEY) for _ in range(3)] == [True, True, True]
    await fail(breaker, 2, clock)  # the failures before opening were forgotten
    assert breaker.state(KEY) == "closed"


async def test_a_failed_probe_opens_the_circuit_for_another_cooldown(make: Make) -> None:
    clock = Clock()
    breaker = make(clock)
    await fail(breaker, 3, clock)
    clock.advance(30)
    assert await breaker.allow(KEY)
    await breaker.record_failure(KEY)
    assert (breaker.state(KEY), await breaker.allow(KEY)) == ("open", False)
    clock.advance(29)
    assert await breaker.allow(KEY) is False
    clock.advance(1)
    assert await breaker.allow(KEY) is True


async def test_reports_of_requests_that_started_before_it_opened_change_nothing(make: Make) -> None:
    clock = Clock()
    breaker = make(clock)
    await fail(breaker, 3, clock)
    await breaker.record_success(KEY)
    await breaker.record_failure(KEY)
    clock.advance(30)  # not extended by the late failure
    assert await breaker.allow(KEY) is True


async def test_a_local_probe_that_never_reports_frees_its_slot_after_a_cooldown() -> None:
    clock = Clock()
    breaker = local(clock)
    await fail(breaker, 3, clock)
    clock.advance(30)
    assert await breaker.allow(KEY) is True  # then cancelled: no report
    clock.advance(29)
    assert await breaker.allow(KEY) is False
    clock.advance(1)
    assert await breaker.allow(KEY) is True


async def test_a_shared_probe_that_never_reports_frees_its_slot_after_a_cooldown(redis_settings: Any) -> None:
    cooldown = 0.2  # the slot's expiry is Redis's own clock, so this one runs in real time
    breaker = RedisBreaker(BreakerConfig(failures=1, window=10, cooldown=cooldown))
    await breaker.record_failure(KEY)
    assert await breaker.allow(KEY) is False  # open
    assert await allowed_within(breaker, 2)  # the cooldown passed: this one probes
    other = RedisBreaker(BreakerConfig(failures=1, window=10, cooldown=cooldown))
    assert await other.allow(KEY) is False  # the probe's slot is taken
    assert await allowed_within(other, 2)  # and freed, though the probe never reported


async def allowed_within(breaker: RedisBreaker, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not await breaker.allow(KEY):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def test_two_processes_share_one_circuit_and_only_one_of_them_probes(redis_settings: Any) -> None:
    clock = Clock()
    first, second = shared(clock), shared(clock)
    await first.record_failure(KEY)
    await second.record_failure(KEY)
    assert await first.allow(KEY) is True  # sees closed and remembers it
    await second.record_failure(KEY)  # the third failure, in the other process
    assert (second.state(KEY), await second.allow(KEY)) == ("open", False)
    assert await first.allow(KEY) is True  # its closed view is trusted for a moment...
    clock.advance(MIRROR_SECONDS)
    assert (await first.allow(KEY), first.state(KEY)) == (False, "open")  # ...then refreshed
    clock.advance(30)
    answers = await asyncio.gather(*(b.allow(KEY) for b in (first, second) for _ in range(5)))
    assert sorted(answers) == [False] * 9 + [True]
    prober, waiter = (first, second) if answers[:5].count(True) else (second, first)
    await waiter.record_success(KEY)  # not the probe: closes nothing
    assert await waiter.allow(KEY) is False
    await prober.record_success(KEY)
    clock.advance(MIRROR_SECONDS)
    assert (await waiter.allow(KEY), await prober.allow(KEY)) == (True, True)


async def test_a_healthy_deployment_costs_one_redis_call_per_mirror_period(
    redis_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    breaker = shared(clock)
    calls: list[str] = []
    real_eval = breaker._eval

    async def counting_eval(script: str, keys: tuple[str, ...], *args: Any) -> Any:
        calls.append(keys[0])
        return await real_eval(script, keys, *args)

    monkeypatch.setattr(breaker, "_eval", counting_eval)
    for _ in range(3):
        assert all([await breaker.allow(KEY) for _ in range(100)])
        await breaker.record_success(KEY)
        clock.advance(MIRROR_SECONDS)
    assert len(calls) == 3


async def test_without_redis_the_shared_breaker_lets_requests_through(settings: Any) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    breaker = RedisBreaker(CONFIG)
    await breaker.record_failure(KEY)
    assert await breaker.allow(KEY) is True


async def test_the_admin_reads_the_shared_state_from_redis(redis_settings: Any) -> None:
    clock = Clock()
    clock.now = __import__("time").time()
    opener = shared(clock)
    assert await asyncio.to_thread(shared_state, KEY) == "closed"
    await fail(opener, 3, clock)
    assert await asyncio.to_thread(shared_state, KEY) == "open"


def test_the_process_breaker_follows_redis_url(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(breaker_module, "_breaker", None)
    settings.REDIS_URL = ""
    assert isinstance(breaker_module.breaker(), LocalBreaker)
    monkeypatch.setattr(breaker_module, "_breaker", None)
    settings.REDIS_URL = REDIS_URL
    assert isinstance(breaker_module.breaker(), RedisBreaker)
    assert breaker_module.breaker() is breaker_module.breaker()


def test_the_settings_configure_the_breaker(settings: Any) -> None:
    settings.PROXY_BREAKER_FAILURES, settings.PROXY_BREAKER_WINDOW_SECONDS = 9, 12.5
    settings.PROXY_BREAKER_COOLDOWN_SECONDS = 4
    assert BreakerConfig.from_settings() == BreakerConfig(failures=9, window=12.5, cooldown=4.0)
