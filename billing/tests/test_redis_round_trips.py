"""Round trips to Redis per request, counted by Redis itself; and the
budget still exact across two gateway processes with settlements batched.

A key with a budget, requests- and tokens-per-minute limits and a cap on
requests in flight, served by a real gateway on the PostgreSQL + Redis run;
busy, it costs a round trip per slice of its limits (proxy.leases), and a
slice whose process was killed is the pool's again within a lease.
The gateway talks to a redis-server of the test's own, so that Redis's
`INFO commandstats` counts this gateway's commands and nobody else's.
"""

import asyncio
import math
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from bench.redis_counts import Counts, commandstats, gateway_scripts, private_redis, scripted_commands
from conftest import IssuedKey, Ledger, wait_until
from gateway.livefeed import FLUSH_SECONDS as LIVEFEED_FLUSH_SECONDS
from proxy.tests.live import LiveGateway

REQUEST = {"model": "budget-model", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
REQUEST_COST = 20_000  # nanos: see billing/tests/test_budgets_live.py
WARM_UP = 20
MEASURED = 200
CONCURRENCY = 8

pytestmark = pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="the PostgreSQL + Redis run")


@pytest.fixture
def redis_url() -> Iterator[str]:
    try:
        with private_redis() as url:
            yield url
    except RuntimeError as error:
        pytest.skip(str(error))


def measured_env(redis_url: str) -> dict[str, str]:
    return {
        "REDIS_URL": redis_url,
        # Nothing polls or renews while the run measures: what is left is the requests'.
        "GATEWAY_CONFIG_POLL_SECONDS": "600",
        "BILLING_RESERVATION_LEASE_SECONDS": "300",
        "PROXY_INFLIGHT_LEASE_SECONDS": "300",
        # The writes ride on the next request's call; the timer that sends
        # them when no request comes is set above any pause a lane of this
        # test takes on a loaded machine, so the count is of the design.
        "BILLING_SETTLE_FLUSH_SECONDS": "0.5",
    }


@pytest.fixture
def gateway(gateway_config: None, redis_url: str) -> Iterator[LiveGateway]:
    live = LiveGateway(env=measured_env(redis_url), server="uvicorn").start()
    yield live
    live.terminate()


def budgeted_key(issue_key: Callable[..., IssuedKey], blocker: Any, **limits: int) -> IssuedKey:
    from accounts.models import ApiKey
    from billing.services import budget_set

    key = issue_key(**limits)
    with blocker.unblock():
        budget_set(api_key=ApiKey.objects.get(pk=key.key_id), limit_usd=Decimal("1000"), period="month")
    return key


def limited_key(issue_key: Callable[..., IssuedKey], blocker: Any) -> IssuedKey:
    return budgeted_key(issue_key, blocker, rpm_limit=100_000, tpm_limit=10_000_000, max_parallel=1000)


async def requests_send(gateway: LiveGateway, key: IssuedKey, count: int, lanes: int = CONCURRENCY) -> list[int]:
    async with aiohttp.ClientSession() as session:
        lane = asyncio.Semaphore(lanes)

        async def one() -> int:
            async with (
                lane,
                session.post(gateway.url + "/v1/chat/completions", json=REQUEST, headers=key.headers) as r,
            ):
                await r.read()
                return r.status

        return await asyncio.gather(*(one() for _ in range(count)))


def spent_in_redis(redis_url: str) -> int:
    """The budget's spent counter (the only budget on this private Redis)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    return int(client.get(spent_counter(client)) or 0)


def spent_counter(client: Any) -> bytes:
    parts = (b":held", b":amounts", b":heldsum", b":holders")
    [name] = [n for n in client.scan_iter("*:spent:budget:*") if not n.endswith(parts)]
    return bytes(name)


def held_in_redis(redis_url: str) -> int:
    """What the budget's reservations and slices hold whose lease has not
    ended by Redis's clock (what the next reservation counts)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    name = spent_counter(client)
    seconds, micros = client.time()
    live = client.zrangebyscore(name + b":held", seconds * 1000 + micros // 1000, "+inf")
    return sum(int(client.hget(name + b":amounts", rid) or 0) for rid in live)


def test_a_key_with_a_budget_and_rate_limits_costs_at_most_one_redis_round_trip_per_request(
    gateway: LiveGateway, redis_url: str, issue_key: Callable[..., IssuedKey], ledger: Ledger, django_db_blocker: Any
) -> None:
    key = limited_key(issue_key, django_db_blocker)
    assert asyncio.run(requests_send(gateway, key, WARM_UP)) == [200] * WARM_UP  # snapshot, scripts loaded
    before = commandstats(redis_url)
    started = time.monotonic()

    statuses = asyncio.run(requests_send(gateway, key, MEASURED))
    ledger.wait(key.key_id, WARM_UP + MEASURED)  # stored, and with it every settlement flushed
    elapsed = time.monotonic() - started

    counts = Counts.between(before, commandstats(redis_url), scripted_commands(*gateway_scripts()))
    print(f"\nper request: {counts.per_request(MEASURED)}")
    assert statuses == [200] * MEASURED
    assert counts.other == {}, counts.calls  # nothing outside a script call
    # One call per request, the writes riding on it; beside them, only the
    # last requests' settlement, and the live feed's sends (one per flush of
    # its own, whatever the traffic: gateway.livefeed).
    live_feed = math.ceil(elapsed / LIVEFEED_FLUSH_SECONDS) + 1
    assert counts.round_trips <= MEASURED + 1 + live_feed, counts.per_request(MEASURED)
    settled = (WARM_UP + MEASURED) * REQUEST_COST  # the settled spend in Redis is the books' to the nano
    wait_until(lambda: spent_in_redis(redis_url) == settled, 5, lambda: spent_in_redis(redis_url))


def test_a_burst_of_100_requests_over_two_gateway_processes_never_overshoots_a_budget_that_fits_10(
    gateway_config: None, issue_key: Callable[..., IssuedKey], ledger: Ledger, django_db_blocker: Any
) -> None:
    from accounts.models import ApiKey
    from billing.services import budget_set

    gateways = [LiveGateway().start(), LiveGateway().start()]  # both on the run's Redis (REDIS_URL)
    try:
        key = issue_key(rpm_limit=100_000, max_parallel=1000)
        with django_db_blocker.unblock():
            budget_set(api_key=ApiKey.objects.get(pk=key.key_id), limit_usd=Decimal("0.0002"), period="day")

        async def burst() -> list[tuple[int, str]]:
            async with aiohttp.ClientSession() as session:

                async def one(gateway: LiveGateway) -> tuple[int, str]:
                    url = gateway.url + "/v1/chat/completions"
                    async with session.post(url, json=REQUEST, headers=key.headers) as r:
                        body = await r.json(content_type=None)
                        return r.status, (body.get("error") or {}).get("code", "")

                return await asyncio.gather(*(one(gateways[i % 2]) for i in range(100)))

        outcomes = Counter(asyncio.run(burst()))
        assert outcomes == {(200, ""): 10, (429, "budget_exceeded"): 90}, outcomes
        records = ledger.wait(key.key_id, 10)
        assert sum(r.cost_nanos for r in records) == 10 * REQUEST_COST  # the $0.0002 exactly, never above
    finally:
        for gateway in gateways:
            gateway.terminate()


@pytest.mark.parametrize("key_of", [limited_key, budgeted_key], ids=["budget and rate limits", "budget only"])
def test_a_busy_key_costs_a_redis_round_trip_per_slice_of_its_limits_not_per_request(
    gateway: LiveGateway,
    redis_url: str,
    issue_key: Callable[..., IssuedKey],
    ledger: Ledger,
    django_db_blocker: Any,
    key_of: Callable[[Callable[..., IssuedKey], Any], IssuedKey],
) -> None:
    key = key_of(issue_key, django_db_blocker)
    assert asyncio.run(requests_send(gateway, key, WARM_UP)) == [200] * WARM_UP
    before = commandstats(redis_url)
    started = time.monotonic()

    statuses = asyncio.run(requests_send(gateway, key, 2 * MEASURED))
    ledger.wait(key.key_id, WARM_UP + 2 * MEASURED)
    elapsed = time.monotonic() - started

    counts = Counts.between(before, commandstats(redis_url), scripted_commands(*gateway_scripts()))
    print(f"\nper request: {counts.per_request(2 * MEASURED)}")
    assert statuses == [200] * (2 * MEASURED)
    assert counts.other == {}, counts.calls
    live_feed = math.ceil(elapsed / LIVEFEED_FLUSH_SECONDS) + 1
    assert counts.round_trips - live_feed <= 0.2 * 2 * MEASURED, counts.per_request(2 * MEASURED)
    # A slice's settlements between two calls are summed into one write: the
    # spent counter is raised once per call (with the windows' own writes
    # beside it), not once per request.
    assert counts.calls.get("incrby", 0) <= 0.5 * 2 * MEASURED, counts.per_request(2 * MEASURED)

    # Exact all the same: once the slices' time is up, what they did not
    # spend is given back, and the spend in Redis is the books' to the nano.
    def books() -> tuple[int, int]:
        return spent_in_redis(redis_url), held_in_redis(redis_url)

    wait_until(lambda: books() == ((WARM_UP + 2 * MEASURED) * REQUEST_COST, 0), 10, books)


def test_a_slice_held_by_a_killed_gateway_is_spendable_again_within_one_lease(
    gateway_config: None, redis_url: str, issue_key: Callable[..., IssuedKey], django_db_blocker: Any
) -> None:
    from accounts.models import ApiKey
    from billing.services import budget_set

    fits = 64  # requests the budget pays for; a slice is taken well above its end
    lease = 2.0
    key = issue_key(rpm_limit=100_000, max_parallel=1000)
    with django_db_blocker.unblock():
        budget_set(api_key=ApiKey.objects.get(pk=key.key_id), limit_usd=Decimal("0.00128"), period="day")
    env = {**measured_env(redis_url), "BILLING_RESERVATION_LEASE_SECONDS": str(lease), "BILLING_LEASE_SECONDS": "600"}
    killed = LiveGateway(env=env, server="uvicorn").start()
    survivor = LiveGateway(env={**env, "BILLING_LEASE_SECONDS": "1"}, server="uvicorn").start()
    try:
        served = 0
        while served < 2 or held_in_redis(redis_url) < 2 * REQUEST_COST:  # until a slice is held, unspent
            assert served < 40, held_in_redis(redis_url)
            assert asyncio.run(requests_send(killed, key, 1)) == [200]
            served += 1
            settled = served * REQUEST_COST  # settled: what Redis still holds is the gateway's slice
            wait_until(lambda s=settled: spent_in_redis(redis_url) == s, 10, lambda: spent_in_redis(redis_url))
        killed.process.send_signal(signal.SIGKILL)
        killed.process.wait()
        gone = time.monotonic()
        refused_early = 0

        def served_all() -> bool:
            nonlocal served, refused_early
            [status] = asyncio.run(requests_send(survivor, key, 1))
            if status == 200:
                served += 1
            else:
                refused_early += 1  # the killed gateway's slice, until its lease ends
            return served == fits

        wait_until(served_all, gone + lease + 1.5 - time.monotonic(), lambda: (served, refused_early))
        print(f"\nrefused while the killed gateway's slice counted: {refused_early}")
        assert asyncio.run(requests_send(survivor, key, 1)) == [429]  # and never a request more
        assert spent_in_redis(redis_url) == fits * REQUEST_COST
    finally:
        if killed.process.poll() is None:
            killed.process.kill()
        survivor.terminate()


def test_two_busy_gateways_spending_slices_never_serve_past_a_budget(
    gateway_config: None, redis_url: str, issue_key: Callable[..., IssuedKey], ledger: Ledger, django_db_blocker: Any
) -> None:
    from accounts.models import ApiKey
    from billing.services import budget_set

    fits = 200
    key = issue_key(rpm_limit=100_000, max_parallel=1000)
    with django_db_blocker.unblock():
        budget_set(api_key=ApiKey.objects.get(pk=key.key_id), limit_usd=Decimal("0.004"), period="day")
    gateways = [LiveGateway(env=measured_env(redis_url), server="uvicorn").start() for _ in range(2)]
    try:
        before = commandstats(redis_url)

        async def both() -> list[list[int]]:
            return list(await asyncio.gather(*(requests_send(g, key, 150) for g in gateways)))

        statuses = [status for lane in asyncio.run(both()) for status in lane]
        counts = Counts.between(before, commandstats(redis_url), scripted_commands(*gateway_scripts()))
        print(f"\nper request: {counts.per_request(len(statuses))}")
        outcomes = Counter(statuses)
        served = outcomes[200]
        assert set(outcomes) <= {200, 429}, outcomes
        # Never past the budget. A gateway whose clients are done may still
        # hold a slice for its lease's time, refusing the other's last few
        # early: at most one slice, an eighth of a holder's share of the rest.
        assert fits - fits // 2 // 8 <= served <= fits, outcomes
        assert counts.calls.get("hincrby", 0) > 0  # slices were spent: settling from one lowers it (HINCRBY)
        records = ledger.wait(key.key_id, served)
        assert sum(r.cost_nanos for r in records) == served * REQUEST_COST  # what was served, to the nano
        wait_until(lambda: spent_in_redis(redis_url) == served * REQUEST_COST, 10, lambda: spent_in_redis(redis_url))
    finally:
        for gateway in gateways:
            gateway.terminate()
