"""Round trips to Redis per request, counted by Redis itself; and the
budget still exact across two gateway processes with settlements batched.

A key with a budget, requests- and tokens-per-minute limits and a cap on
requests in flight, served by a real gateway on the PostgreSQL + Redis run.
The gateway talks to a redis-server of the test's own, so that Redis's
`INFO commandstats` counts this gateway's commands and nobody else's.
"""

import asyncio
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from bench.redis_counts import Counts, commandstats, gateway_scripts, private_redis, scripted_commands
from conftest import IssuedKey, Ledger
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


@pytest.fixture
def gateway(gateway_config: None, redis_url: str) -> Iterator[LiveGateway]:
    env = {
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
    live = LiveGateway(env=env, server="uvicorn").start()
    yield live
    live.terminate()


def limited_key(issue_key: Callable[..., IssuedKey], blocker: Any) -> IssuedKey:
    from accounts.models import ApiKey
    from billing.services import budget_set

    key = issue_key(rpm_limit=100_000, tpm_limit=10_000_000, max_parallel=1000)
    with blocker.unblock():
        budget_set(api_key=ApiKey.objects.get(pk=key.key_id), limit_usd=Decimal("1000"), period="month")
    return key


async def requests_send(gateway: LiveGateway, key: IssuedKey, count: int) -> list[int]:
    async with aiohttp.ClientSession() as session:
        lanes = asyncio.Semaphore(CONCURRENCY)

        async def one() -> int:
            async with (
                lanes,
                session.post(gateway.url + "/v1/chat/completions", json=REQUEST, headers=key.headers) as r,
            ):
                await r.read()
                return r.status

        return await asyncio.gather(*(one() for _ in range(count)))


def spent_in_redis(redis_url: str) -> int:
    """The budget's spent counter (the only budget on this private Redis)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    [name] = [n for n in client.scan_iter("*:spent:budget:*") if not n.endswith((b":held", b":amounts", b":heldsum"))]
    return int(client.get(name) or 0)


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
    deadline = time.monotonic() + 5  # the settled spend in Redis is the books' to the nano
    while spent_in_redis(redis_url) != (WARM_UP + MEASURED) * REQUEST_COST:
        assert time.monotonic() < deadline, spent_in_redis(redis_url)
        time.sleep(0.02)


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
