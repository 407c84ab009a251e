"""Upstream limits per deployment (proxy.capacity): the gateway never sends a
deployment more than its rpm/tpm; a full one's requests go to another
deployment of the route (a standby included); with none left the request
waits a bounded time, then is refused with 429 `upstream_capacity`; an
upstream 429 drops the limit to a fifth (its Retry-After honoured) and
successes bring it back.

The limiter tests run against this process's memory and against Redis (two
limiters sharing it are two gateway processes); the live ones against a
gateway of their own (and, on the PostgreSQL + Redis run, two of them).
"""

import os
import time
import uuid
from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command

from conftest import UPSTREAM_SECRET, IssuedKey, Ledger, await_until, unique_marker, wait_until
from gateway.kernel.context import ProviderConfig, RouteTarget
from proxy import capacity as capacity_module
from proxy.capacity import (
    capacity_key,
    capacity_outcome,
    capacity_pick,
    capacity_settle,
    capacity_shown,
    throttle_seconds,
)
from proxy.capacity_redis import RedisCapacity
from proxy.capacity_windows import LocalCapacity
from proxy.tests.fake_upstream import FakeUpstream
from proxy.tests.live import LiveGateway
from proxy.tests.test_faults import Answer, assert_openai_error, chat, messages, seen_upstream

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/14"
PROVIDER = ProviderConfig(name="p", kind="openai", base_url="http://127.0.0.1:9/v1")


def target(deployment_id: int, rpm: int | None = None, tpm: int | None = None, priority: int = 0) -> RouteTarget:
    return RouteTarget(
        public_model="m",
        provider=PROVIDER,
        upstream_model=f"up-{deployment_id}",
        price=None,
        deployment_id=deployment_id,
        priority=priority,
        rpm=rpm,
        tpm=tpm,
    )


def fresh_id() -> int:
    return uuid.uuid4().int % 10**9  # a deployment no other test (or run) counted in


# --- the limiter, in memory and in Redis ---------------------------------------------
@pytest.fixture
def redis_settings(settings: Any) -> Iterator[Any]:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.ConnectionError:
        pytest.skip(f"no Redis at {REDIS_URL}")
    settings.REDIS_URL = REDIS_URL
    settings.REDIS_KEY_PREFIX = f"test-capacity-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    yield settings
    client = redis.Redis.from_url(REDIS_URL)
    for name in client.scan_iter(settings.REDIS_KEY_PREFIX + ":*"):
        client.delete(name)


@pytest.fixture(params=["local", "redis"])
def limiter(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> LocalCapacity | RedisCapacity:
    """The process's limiter: in memory, or in Redis (as with REDIS_URL set)."""
    if request.param == "redis":
        request.getfixturevalue("redis_settings")
        made: LocalCapacity | RedisCapacity = RedisCapacity()
    else:
        request.getfixturevalue("settings").REDIS_URL = ""
        made = LocalCapacity()
    monkeypatch.setattr(capacity_module, "_capacity", made)
    return made


async def picks(order: list[RouteTarget], count: int, tokens: int = 1) -> list[int | None]:
    chosen = []
    for _ in range(count):
        picked = await capacity_pick(order, tokens)
        chosen.append(None if picked.target is None else picked.target.deployment_id)
    return chosen


async def reported(limiter: LocalCapacity | RedisCapacity) -> None:
    """What the attempts reported, in Redis (a process sends it with its next admission, or within a second)."""
    if isinstance(limiter, RedisCapacity):
        await limiter.flush()


async def test_a_deployment_with_rpm_2_takes_two_requests_and_the_standby_the_rest(limiter: Any) -> None:
    limited, standby = target(fresh_id(), rpm=2), target(fresh_id(), priority=1)
    assert await picks([limited, standby], 5) == [limited.deployment_id] * 2 + [standby.deployment_id] * 3


async def test_with_every_deployment_full_none_is_picked_and_the_wait_is_until_the_oldest_leaves(
    limiter: Any,
) -> None:
    one, two = target(fresh_id(), rpm=1), target(fresh_id(), rpm=1)
    assert await picks([one, two], 2) == [one.deployment_id, two.deployment_id]
    full = await capacity_pick([one, two], 1)
    assert full.target is None and 58 < full.retry_in <= 60


async def test_two_limiters_sharing_redis_share_one_count(redis_settings: Any) -> None:
    first, second = RedisCapacity(), RedisCapacity()  # two gateway processes
    limited = target(fresh_id(), rpm=3)
    key = capacity_key(limited)
    assert key is not None
    admitted = [await process.pick([(limited, key)], 1) for process in (first, second, first, second, first)]
    assert [a.target is not None for a in admitted] == [True, True, True, False, False]


async def test_tokens_per_minute_count_the_estimate_until_the_answer_says_what_it_used(limiter: Any) -> None:
    limited = target(fresh_id(), tpm=100)
    first = await capacity_pick([limited], 40)
    assert (await capacity_pick([limited], 40)).target is not None
    assert (await capacity_pick([limited], 40)).target is None  # 120 > 100
    capacity_settle(first.grant, 10)  # the first used 10, not 40
    await reported(limiter)
    assert (await capacity_pick([limited], 40)).target is not None  # 90


async def test_an_upstream_429_drops_the_limit_to_a_fifth_and_every_ten_successes_give_a_tenth_back(
    limiter: Any,
) -> None:
    limited = target(fresh_id(), rpm=10)
    key = capacity_key(limited)
    assert key is not None
    throttled = await capacity_pick([limited], 1)
    capacity_outcome(throttled.grant, 429, {})
    await reported(limiter)
    assert capacity_shown(key, 10, None) == "rpm 2/10 (1 sent)"
    assert await picks([limited], 2) == [limited.deployment_id, None]  # one more fits under 2
    for count in range(1, 81):
        capacity_outcome(throttled.grant, 200, {})
        if count in (9, 10, 80):
            await reported(limiter)
            tenths = 2 + count // 10
            assert capacity_shown(key, 10, None).startswith(f"rpm {tenths}/10 "), count


async def test_an_upstream_retry_after_skips_the_deployment_until_then(limiter: Any) -> None:
    limited, standby = target(fresh_id(), rpm=100), target(fresh_id(), priority=1)
    throttled = await capacity_pick([limited], 1)
    started = time.monotonic()
    capacity_outcome(throttled.grant, 429, {"Retry-After": "0.4"})
    await reported(limiter)
    assert await picks([limited, standby], 1) == [standby.deployment_id]

    async def taken_back() -> bool:
        return (await capacity_pick([limited], 1)).target is not None

    await await_until(taken_back, 5, "the deployment was not taken back")
    assert time.monotonic() - started >= 0.35


def test_retry_after_ms_is_read_before_retry_after() -> None:
    assert throttle_seconds({"retry-after-ms": "250", "Retry-After": "7"}) == 0.25
    assert throttle_seconds({"Retry-After": "7"}) == 7.0
    assert throttle_seconds({}) == 0.0


# --- commands, the declarative file, the management API, the admin ------------------
@pytest.mark.django_db
def test_route_create_gateway_apply_and_the_api_set_a_deployments_limits(admin_client: Any) -> None:
    from proxy.apply import config_apply
    from proxy.catalog_loader import catalog_load
    from proxy.models import Deployment, Provider

    Provider.objects.create(name="a", base_url="https://a.test/v1")
    call_command("route_create", "m", "--provider", "a", "--rpm", "60", "--tpm", "90000", stdout=StringIO())
    [plan_target] = catalog_load().resolve("m").deployments
    assert (plan_target.rpm, plan_target.tpm) == (60, 90000)
    config_apply(
        {
            "providers": [{"name": "a", "base_url": "https://a.test/v1"}],
            "routes": [
                {"model": "m", "deployments": [{"provider": "a", "rpm": 30}, {"provider": "a", "upstream_model": "b"}]}
            ],
        }
    )
    assert sorted(Deployment.objects.values_list("upstream_model", "rpm", "tpm")) == [("", 30, None), ("b", None, None)]
    deployment = Deployment.objects.get(upstream_model="")
    page = admin_client.get(f"/admin/proxy/route/{deployment.route_id}/change/").content.decode()
    assert "Effective limit" in page and "rpm 30/30 (0 sent)" in page
    created = admin_client.post(
        "/api/routes",
        {"model": "n", "provider": "a", "upstream_model": "c", "rpm": 6, "tpm": 1000},
        content_type="application/json",
    )
    assert created.status_code == 201
    [listed] = created.json()["deployments"]
    assert (listed["rpm"], listed["tpm"]) == (6, 1000)


# --- end to end ---------------------------------------------------------------------
WAIT = 0.5  # PROXY_CAPACITY_WAIT_SECONDS of the gateway here
PREFIX = f"cap{uuid.uuid4().hex[:6]}"
FLAKY = "fake-flaky-429-1-after-3"  # one 429 per marker, Retry-After: 3


def route_name(name: str) -> str:
    return f"{PREFIX}-{name}"


@pytest.fixture(scope="module")
def routes(gateway_config: None, django_db_blocker: Any, fake_upstream: FakeUpstream) -> None:
    from proxy.services import provider_upsert, route_upsert

    with django_db_blocker.unblock():
        openai_fake, _ = provider_upsert(
            name=f"{PREFIX}-fake", kind="openai", base_url=fake_upstream.url, api_key=UPSTREAM_SECRET
        )
        anthropic_fake, _ = provider_upsert(
            name=f"{PREFIX}-claude", kind="anthropic", base_url=fake_upstream.url, api_key=UPSTREAM_SECRET
        )
        route_upsert(model=route_name("two"), provider=openai_fake, upstream_model="cap-limited", rpm=2)
        route_upsert(model=route_name("two"), provider=openai_fake, upstream_model="cap-standby", priority=1)
        route_upsert(model=route_name("one"), provider=openai_fake, upstream_model="cap-one", rpm=1)
        route_upsert(model=route_name("claude"), provider=anthropic_fake, upstream_model="claude-up", rpm=1)
        route_upsert(model=route_name("shared"), provider=openai_fake, upstream_model="cap-shared", rpm=3)
        route_upsert(model=route_name("adaptive"), provider=openai_fake, upstream_model=FLAKY, rpm=10)
        route_upsert(model=route_name("adaptive"), provider=openai_fake, upstream_model="cap-behind", priority=1)


GATEWAY_ENV = {
    "PROXY_CAPACITY_WAIT_SECONDS": str(WAIT),
    "PROXY_RETRY_BACKOFF_MAX": "0.5",  # a Retry-After of 3 s moves on to the standby at once
}


@pytest.fixture(scope="module")
def gateway(routes: None) -> Iterator[LiveGateway]:
    live = LiveGateway(env=GATEWAY_ENV).start()
    yield live
    live.terminate()


def answered_by(answer: Answer) -> str:
    assert answer.status == 200, answer
    return (answer.deployment or "").rsplit("/", 1)[-1]


def test_five_requests_to_a_deployment_with_rpm_2_send_it_exactly_two_and_the_standby_three(
    gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream, ledger: Ledger
) -> None:
    marker = unique_marker()
    answers = [answered_by(chat(gateway, key, route_name("two"), marker)) for _ in range(5)]
    assert answers == ["cap-limited"] * 2 + ["cap-standby"] * 3
    assert len(seen_upstream(fake_upstream, marker, "cap-limited")) == 2
    assert len(seen_upstream(fake_upstream, marker, "cap-standby")) == 3
    assert sorted(r.upstream_model for r in ledger.wait(key.key_id, 5)) == ["cap-limited"] * 2 + ["cap-standby"] * 3


def test_with_no_room_the_request_waits_the_bounded_time_then_gets_429_upstream_capacity(
    gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream, ledger: Ledger
) -> None:
    marker = unique_marker()
    assert answered_by(chat(gateway, key, route_name("one"), marker)) == "cap-one"
    refused = chat(gateway, key, route_name("one"), marker)
    assert_openai_error(refused, 429, "upstream_capacity", "rate_limit_error")
    assert WAIT <= refused.elapsed < WAIT + 3
    assert 50 <= int(refused.headers["retry-after"]) <= 60  # when the first request leaves the window
    assert len(seen_upstream(fake_upstream, marker, "cap-one")) == 1  # the refused one never left
    assert [r.status_code for r in ledger.wait(key.key_id, 1)] == [200]


def test_the_refusal_comes_in_the_anthropic_envelope_on_the_messages_api(gateway: LiveGateway, key: IssuedKey) -> None:
    assert messages(gateway, key, route_name("claude"), unique_marker()).status == 200
    refused = messages(gateway, key, route_name("claude"), unique_marker())
    assert refused.status == 429 and refused.json["type"] == "error"
    assert refused.json["error"]["type"] == "rate_limit_error"
    assert "at the request or token limit its provider allows" in refused.json["error"]["message"]
    assert int(refused.headers["retry-after"]) >= 1


def test_an_upstream_429_skips_the_deployment_for_its_retry_after_then_takes_it_back_at_a_fifth(
    gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream
) -> None:
    marker = unique_marker()
    sent_at = time.monotonic()  # the 429 comes after: the deployment is skipped until 3 s after it at least
    first = chat(gateway, key, route_name("adaptive"), marker)
    assert (answered_by(first), first.attempts) == ("cap-behind", "2")  # the 429, then the standby
    skipped = chat(gateway, key, route_name("adaptive"), marker)
    assert (answered_by(skipped), skipped.attempts) == ("cap-behind", "1")  # not asked again before Retry-After
    assert len(seen_upstream(fake_upstream, marker, FLAKY)) == 1
    wait_until(lambda: answered_by(chat(gateway, key, route_name("adaptive"), marker)) == FLAKY, timeout=10)
    assert time.monotonic() - sent_at >= 3 - 0.05
    # Its limit is now a fifth of 10: the 429 and this answer fill it.
    assert answered_by(chat(gateway, key, route_name("adaptive"), marker)) == "cap-behind"
    assert len(seen_upstream(fake_upstream, marker, FLAKY)) == 2


def test_two_gateway_processes_share_a_deployments_count_through_redis(
    gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream
) -> None:
    if not os.environ.get("REDIS_URL"):
        pytest.skip("one process counts in memory: sharing needs REDIS_URL")
    other = LiveGateway(env=GATEWAY_ENV).start()
    try:
        marker = unique_marker()
        answers = [chat(g, key, route_name("shared"), marker) for g in (gateway, other, gateway, other)]
        assert [a.status for a in answers] == [200, 200, 200, 429]
        assert_openai_error(answers[3], 429, "upstream_capacity", "rate_limit_error")
        assert len(seen_upstream(fake_upstream, marker, "cap-shared")) == 3
    finally:
        other.terminate()
