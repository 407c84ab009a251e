"""Rate limits: requests and tokens per minute and requests in flight, per key and tenant."""

import asyncio
import json
import os
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from conftest import IssuedKey
from gateway.kernel.context import RateLimits, TenantContext
from gateway.kernel.errors import GatewayError
from proxy.ratelimit import LocalRateLimiter, counters_for
from proxy.ratelimit_redis import RedisRateLimiter
from proxy.tests.live import LiveGateway

NOON = 1_800_000_000.0 - 1_800_000_000.0 % 60 + 30  # 30 s into a minute

# Short, but renewed every third of one: two thirds of a lease (0.6 s) of
# slack for a loaded machine before a live slot could lapse.
LEASE = 0.9


NO_LIMITS = RateLimits()


def caller(key: RateLimits = NO_LIMITS, tenant: RateLimits = NO_LIMITS, key_id: int = 1) -> TenantContext:
    return TenantContext(
        tenant_id=7,
        tenant_slug="t",
        tenant_active=True,
        key_id=key_id,
        key_prefix="sk-gw-x",
        key_limits=key,
        tenant_limits=tenant,
    )


def admit(limiter: Any, ctx: TenantContext, tokens: int = 10, now: float = NOON) -> Any:
    return asyncio.run(limiter.admit(counters_for(ctx, tokens=tokens, now=now), now))


def test_requests_per_minute_refuse_the_next_request_with_retry_after_and_headers() -> None:
    limiter, ctx = LocalRateLimiter(), caller(RateLimits(rpm=3))
    admitted = [admit(limiter, ctx) for _ in range(3)]
    assert [a.headers["x-ratelimit-remaining-requests"] for a in admitted] == ["2", "1", "0"]
    assert admitted[0].headers["x-ratelimit-limit-requests"] == "3"
    assert admitted[0].headers["x-ratelimit-reset-requests"] == "30s"
    with pytest.raises(GatewayError) as refused:
        admit(limiter, ctx)
    assert (refused.value.status, refused.value.code) == (429, "rate_limited")
    assert refused.value.headers["Retry-After"] == "30"
    assert admit(limiter, ctx, now=NOON + 30).headers["x-ratelimit-remaining-requests"] == "2"  # the next minute


def test_a_tenant_limit_covers_all_its_keys_and_a_refusal_counts_nowhere() -> None:
    limiter = LocalRateLimiter()
    tenant = RateLimits(rpm=2)
    admit(limiter, caller(RateLimits(rpm=5), tenant, key_id=1))
    admit(limiter, caller(RateLimits(rpm=5), tenant, key_id=2))
    with pytest.raises(GatewayError):
        admit(limiter, caller(RateLimits(rpm=5), tenant, key_id=1))
    # The refused request was not counted against key 1's own limit.
    assert limiter._used["key:1:rpm:" + str(int(NOON // 60))] == 1


def test_tokens_are_reserved_from_the_estimate_and_settled_on_the_real_count() -> None:
    limiter, ctx = LocalRateLimiter(), caller(RateLimits(tpm=1000))
    first = admit(limiter, ctx, tokens=600)
    with pytest.raises(GatewayError) as refused:
        admit(limiter, ctx, tokens=600)
    assert "1000 tokens per minute" in refused.value.message
    limiter.release(first, 100)  # it used 100, not 600
    admit(limiter, ctx, tokens=800)


def test_requests_in_flight_are_given_back_when_they_end() -> None:
    limiter, ctx = LocalRateLimiter(), caller(RateLimits(parallel=2))
    one, _ = admit(limiter, ctx), admit(limiter, ctx)
    with pytest.raises(GatewayError) as refused:
        admit(limiter, ctx)
    assert refused.value.headers["Retry-After"] == "1"
    limiter.release(one, 0)
    limiter.release(one, 0)  # twice: still only one given back
    admit(limiter, ctx)
    with pytest.raises(GatewayError):
        admit(limiter, ctx)


def test_the_redis_limiter_is_atomic_across_instances(settings: Any) -> None:
    import redis

    try:
        redis.Redis.from_url("redis://127.0.0.1:6379/15").ping()
    except redis.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    settings.REDIS_URL = "redis://127.0.0.1:6379/15"
    settings.REDIS_KEY_PREFIX = f"test-rate-{os.getpid()}-{id(settings)}"
    ctx = caller(RateLimits(rpm=10))

    async def contend() -> int:
        limiters = [RedisRateLimiter(), RedisRateLimiter()]  # as if two processes

        async def attempt(i: int) -> bool:
            try:
                await limiters[i % 2].admit(counters_for(ctx, tokens=1, now=NOON), NOON)
                return True
            except GatewayError:
                return False

        return sum(await asyncio.gather(*(attempt(i) for i in range(30))))

    assert asyncio.run(contend()) == 10


@pytest.fixture
def redis_limits(settings: Any) -> Any:
    import redis

    try:
        redis.Redis.from_url("redis://127.0.0.1:6379/15").ping()
    except redis.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    settings.REDIS_URL = "redis://127.0.0.1:6379/15"
    # A fresh namespace per test: a slot an earlier test left (a release
    # lost with its event loop) would hold this test's key for one lease.
    settings.REDIS_KEY_PREFIX = f"test-lease-{uuid.uuid4().hex}"
    settings.PROXY_INFLIGHT_LEASE_SECONDS = LEASE
    return settings


def refused_for(limiter: RedisRateLimiter, ctx: TenantContext, seconds: float) -> bool:
    """Whether every admission is refused for `seconds` (a lease would have lapsed meanwhile)."""

    async def watch() -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                admission = await limiter.admit(counters_for(ctx, tokens=1, now=NOON), NOON)
            except GatewayError:
                await asyncio.sleep(0.02)
                continue
            limiter.release(admission, 1)
            return False
        return True

    return asyncio.run(watch())


def test_an_in_flight_slot_whose_release_is_lost_frees_itself_within_one_lease(redis_limits: Any) -> None:
    ctx = caller(RateLimits(parallel=1))

    async def lost_release() -> None:
        dead = RedisRateLimiter()  # a process that admits a request, then dies (or Redis blinks at its release)
        await dead.admit(counters_for(ctx, tokens=1, now=NOON), NOON)
        dead._held.clear()  # nothing renews it any more
        assert dead._renewer is not None
        dead._renewer.cancel()

    asyncio.run(lost_release())
    other = RedisRateLimiter()
    started = time.monotonic()
    assert not refused_for(other, ctx, 5), "the slot was never given back"
    assert time.monotonic() - started < LEASE + 1.5  # one lease and the polling, not ten minutes


def test_a_request_still_in_flight_keeps_its_slot_past_the_lease(redis_limits: Any) -> None:
    ctx = caller(RateLimits(parallel=1))

    async def long_request() -> bool:
        living = RedisRateLimiter()
        admission = await living.admit(counters_for(ctx, tokens=1, now=NOON), NOON)
        other = RedisRateLimiter()
        deadline = time.monotonic() + 3 * LEASE  # three leases: renewed all along
        refused = True
        while time.monotonic() < deadline:
            try:
                other.release(await other.admit(counters_for(ctx, tokens=1, now=NOON), NOON), 1)
                refused = False
            except GatewayError:
                await asyncio.sleep(0.05)
        living.release(admission, 1)
        await living.wait_released()
        after = await other.admit(counters_for(ctx, tokens=1, now=NOON), NOON)  # released: in at once
        other.release(after, 1)
        await other.wait_released()
        return refused

    assert asyncio.run(long_request())


def post(gateway: LiveGateway, key: IssuedKey) -> tuple[int, Any, dict[str, Any]]:
    body = json.dumps({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}).encode()
    request = urllib.request.Request(gateway.url + "/v1/chat/completions", data=body, headers=key.headers)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, response.headers, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.headers, json.loads(error.read())


@pytest.mark.usefixtures("live_gateway")
def test_a_key_over_its_requests_per_minute_gets_429_rate_limited(
    live_gateway: LiveGateway, issue_key: Callable[..., IssuedKey]
) -> None:
    key = issue_key(rpm_limit=3)
    answers = [post(live_gateway, key) for _ in range(4)]
    assert [status for status, _, _ in answers] == [200, 200, 200, 429]
    assert answers[0][1]["x-ratelimit-limit-requests"] == "3"
    assert answers[2][1]["x-ratelimit-remaining-requests"] == "0"
    status, headers, body = answers[3]
    assert body["error"]["code"] == "rate_limited" and int(headers["Retry-After"]) >= 1


def test_two_processes_sharing_redis_share_the_limit(gateway_config: None, issue_key: Callable[..., IssuedKey]) -> None:
    if not os.environ.get("REDIS_URL"):
        pytest.skip("needs REDIS_URL: the limit is shared through Redis")
    gateways = [LiveGateway().start(), LiveGateway().start()]
    try:
        key = issue_key(rpm_limit=5)
        statuses = Counter(post(gateways[i % 2], key)[0] for i in range(10))
        assert statuses == {200: 5, 429: 5}
    finally:
        for gateway in gateways:
            gateway.terminate()
