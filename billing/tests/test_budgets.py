"""Calendar periods, the spend guard and the ledger's budget counters."""

import asyncio
import datetime as dt
import logging
import time
import uuid
from decimal import Decimal
from typing import Any

import pytest

from accounts.services import api_key_issue, tenant_create
from billing.caps import spend_caps
from billing.guard import LocalSpendGuard, RedisSpendGuard
from billing.ledger import usage_events_store
from billing.models import BudgetSpend, CreditEntry
from billing.periods import period_end, period_start
from billing.services import budget_set, credit_add, credit_balance_nanos
from gateway.kernel.context import BudgetRule, TenantContext, Usage, UsageEvent
from gateway.kernel.errors import GatewayError

UTC = dt.UTC
SUNDAY_NIGHT = dt.datetime(2026, 11, 29, 23, 59, 59, tzinfo=UTC)

# Short, but renewed every third of one: two thirds of a lease (0.6 s) of
# slack for a loaded machine before a live reservation could lapse.
LEASE = 0.9


@pytest.mark.parametrize(
    ("period", "start", "end"),
    [
        ("day", dt.datetime(2026, 11, 29, tzinfo=UTC), dt.datetime(2026, 11, 30, tzinfo=UTC)),
        ("week", dt.datetime(2026, 11, 23, tzinfo=UTC), dt.datetime(2026, 11, 30, tzinfo=UTC)),  # Monday
        ("month", dt.datetime(2026, 11, 1, tzinfo=UTC), dt.datetime(2026, 12, 1, tzinfo=UTC)),
        ("total", dt.datetime(1970, 1, 1, tzinfo=UTC), None),
    ],
)
def test_periods_are_calendar_periods_in_utc(period: str, start: dt.datetime, end: dt.datetime | None) -> None:
    assert period_start(period, SUNDAY_NIGHT) == start
    assert period_end(period, start) == end
    # 23:59:59 in UTC is already Monday in Tokyo; the period is still UTC's.
    tokyo = SUNDAY_NIGHT.astimezone(dt.timezone(dt.timedelta(hours=9)))
    assert period_start(period, tokyo) == start


def test_december_ends_in_january() -> None:
    assert period_end("month", dt.datetime(2026, 12, 1, tzinfo=UTC)) == dt.datetime(2027, 1, 1, tzinfo=UTC)


def caller(
    *budgets: BudgetRule, spent: dict[Any, int] | None = None, prepaid: bool = False, credit: int = 0
) -> TenantContext:
    return TenantContext(
        tenant_id=1,
        tenant_slug="t",
        tenant_active=True,
        key_id=2,
        key_prefix="sk-gw-x",
        budgets=budgets,
        budget_spent=spent or {},
        prepaid=prepaid,
        credit_in_nanos=credit,
    )


def test_the_guard_refuses_what_would_exceed_a_cap_and_counts_reservations_in_flight() -> None:
    guard = LocalSpendGuard()
    caps = spend_caps(caller(BudgetRule(1, "day", 100)), SUNDAY_NIGHT)
    first = guard.reserve_now(caps, 60)
    with pytest.raises(GatewayError) as refused:
        guard.reserve_now(caps, 41)  # 60 in flight + 41 > 100
    assert (refused.value.status, refused.value.code) == (429, "budget_exceeded")
    assert refused.value.headers == {"x-budget-reset": "2026-11-30T00:00:00+00:00"}
    guard.settle_soon(first, 30)  # it cost less than reserved: 70 left
    guard.reserve_now(caps, 70)
    with pytest.raises(GatewayError):
        guard.reserve_now(caps, 1)


def test_settling_twice_counts_once() -> None:
    guard = LocalSpendGuard()
    caps = spend_caps(caller(BudgetRule(1, "day", 100)), SUNDAY_NIGHT)
    reservation = guard.reserve_now(caps, 10)
    guard.settle_soon(reservation, 10)
    guard.settle_soon(reservation, 10)
    guard.reserve_now(caps, 90)


def test_a_new_period_starts_from_zero() -> None:
    guard = LocalSpendGuard()
    ctx = caller(BudgetRule(1, "day", 100), spent={(1, period_start("day", SUNDAY_NIGHT)): 100})
    with pytest.raises(GatewayError):
        guard.reserve_now(spend_caps(ctx, SUNDAY_NIGHT), 1)
    guard.reserve_now(spend_caps(ctx, SUNDAY_NIGHT + dt.timedelta(seconds=1)), 100)  # Monday


def test_every_cap_must_fit_and_a_refusal_reserves_nothing() -> None:
    guard = LocalSpendGuard()
    ctx = caller(BudgetRule(1, "day", 1000), BudgetRule(2, "month", 50))
    with pytest.raises(GatewayError):
        guard.reserve_now(spend_caps(ctx, SUNDAY_NIGHT), 60)
    assert guard.in_flight(spend_caps(ctx, SUNDAY_NIGHT)[0].key) == 0


def test_prepaid_credit_is_a_cap_refused_with_402() -> None:
    guard = LocalSpendGuard()
    caps = spend_caps(caller(prepaid=True, credit=500), SUNDAY_NIGHT)
    guard.reserve_now(caps, 500)
    with pytest.raises(GatewayError) as refused:
        guard.reserve_now(caps, 1)
    assert (refused.value.status, refused.value.code) == (402, "insufficient_credit")


def test_the_redis_guard_reserves_atomically_across_clients(settings: Any) -> None:
    import redis

    url = "redis://127.0.0.1:6379/15"
    try:
        redis.Redis.from_url(url).ping()
    except redis.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    settings.REDIS_KEY_PREFIX = f"test-guard-{id(settings)}"
    ctx = caller(BudgetRule(99, "day", 10 * 7))
    caps = spend_caps(ctx, dt.datetime.now(UTC))

    async def contend() -> int:
        guards = [RedisSpendGuard(url) for _ in range(4)]  # as if four processes

        async def attempt(guard: RedisSpendGuard) -> bool:
            try:
                await guard.reserve(caps, 7)
                return True
            except GatewayError:
                return False

        return sum(await asyncio.gather(*(attempt(guards[i % 4]) for i in range(40))))

    try:
        assert asyncio.run(contend()) == 10
    finally:
        counters_delete(url, settings, caps)


def counters_delete(url: str, settings: Any, caps: Any) -> None:
    import redis

    names = [f"{settings.REDIS_KEY_PREFIX}:spent:{c.key}" for c in caps]
    redis.Redis.from_url(url).delete(*names, *[n + part for n in names for part in (":held", ":amounts", ":heldsum")])


@pytest.fixture
def redis_guards(settings: Any) -> Any:
    """A fresh namespace on the real Redis, with short reservation leases."""
    import redis

    url = "redis://127.0.0.1:6379/15"
    try:
        redis.Redis.from_url(url).ping()
    except redis.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    settings.REDIS_URL, settings.REDIS_KEY_PREFIX = url, f"test-leases-{uuid.uuid4().hex}"
    settings.BILLING_RESERVATION_LEASE_SECONDS = LEASE
    caps = spend_caps(caller(BudgetRule(98, "day", 70)), dt.datetime.now(UTC))
    yield url, caps
    counters_delete(url, settings, caps)


async def refused(guard: RedisSpendGuard, caps: Any, amount: int) -> bool:
    try:
        reservation = await guard.reserve(caps, amount)
    except GatewayError:
        return True
    guard.settle_soon(reservation, 0)
    await guard.wait_settled()
    return False


def test_a_reservation_whose_process_died_stops_counting_within_one_lease(redis_guards: Any) -> None:
    url, caps = redis_guards

    async def scenario() -> float:
        dead = RedisSpendGuard(url)
        await dead.reserve(caps, 70)  # the whole budget, then the process is killed: no settlement, no renewal
        assert dead._renewer is not None
        dead._renewer.cancel()
        alive = RedisSpendGuard(url)
        assert await refused(alive, caps, 7)
        started = time.monotonic()
        while await refused(alive, caps, 7):
            assert time.monotonic() - started < 3, "the dead reservation still counts"
            await asyncio.sleep(0.05)
        return time.monotonic() - started

    assert asyncio.run(scenario()) <= LEASE + 1.0  # one lease and the polling, not the rest of the day


def test_a_long_request_keeps_its_reservation_for_as_long_as_it_lives(redis_guards: Any) -> None:
    url, caps = redis_guards

    async def scenario() -> None:
        living, other = RedisSpendGuard(url), RedisSpendGuard(url)
        reservation = await living.reserve(caps, 70)
        until = time.monotonic() + 3 * LEASE  # three leases: renewed every third of one
        while time.monotonic() < until:
            assert await refused(other, caps, 7)
            await asyncio.sleep(0.05)
        living.settle_soon(reservation, 20)
        await living.wait_settled()
        assert not await refused(other, caps, 50)  # 20 spent: 50 fits
        assert await refused(other, caps, 51)

    asyncio.run(scenario())


def test_the_resync_raises_a_counter_left_short_by_a_lost_settlement_and_never_lowers_one(redis_guards: Any) -> None:
    url, caps = redis_guards
    [cap] = caps

    async def reserve_and_die() -> None:
        dead = RedisSpendGuard(url)
        await dead.reserve(caps, 40)  # it spent 40, but Redis never heard
        assert dead._renewer is not None
        dead._renewer.cancel()

    asyncio.run(reserve_and_die())
    guard = RedisSpendGuard(url)
    assert guard.resync_sync({cap.key: 40}) == 1  # what the books say once the meter stored it
    assert guard.resync_sync({cap.key: 10}) == 0  # the books trail Redis: never lowered

    async def once_the_lease_ended() -> None:
        started = time.monotonic()
        while await refused(guard, caps, 30):  # the dead reservation's lease runs out
            assert time.monotonic() - started < 3
            await asyncio.sleep(0.05)
        assert await refused(guard, caps, 31)  # 40 spent of 70: the lost settlement counts again

    asyncio.run(once_the_lease_ended())


@pytest.fixture
def owner() -> Any:
    tenant = tenant_create(slug="books")
    _, key = api_key_issue(tenant=tenant)
    return tenant, key


def event(owner: Any, request_id: str, cost: int, when: dt.datetime | None = None) -> UsageEvent:
    tenant, key = owner
    return UsageEvent(
        request_id=request_id,
        created_at=when or dt.datetime.now(UTC),
        tenant_id=tenant.pk,
        key_id=key.pk,
        endpoint="chat.completions",
        public_model="m",
        upstream_model="m",
        provider="p",
        status_code=200,
        usage=Usage(output_tokens=1),
        cost_nanos=cost,
        latency_ms=1,
        stream=False,
    )


@pytest.mark.django_db
def test_a_budget_counts_what_was_spent_earlier_in_its_period(owner: Any) -> None:
    tenant, key = owner
    usage_events_store([event(owner, "before", 700)])
    budget = budget_set(tenant=tenant, limit_usd=Decimal("0.001"), period="day")
    assert BudgetSpend.objects.get(budget=budget).spent_nanos == 700


@pytest.mark.django_db
def test_spend_is_added_once_per_request_even_when_a_batch_is_retried(owner: Any) -> None:
    tenant, key = owner
    budget = budget_set(api_key=key, limit_usd=Decimal("1"), period="month")
    batch = [event(owner, "a", 100), event(owner, "b", 250)]
    assert usage_events_store(batch) == 2
    assert usage_events_store(batch) == 0  # the retry of an ambiguous failure
    assert BudgetSpend.objects.get(budget=budget).spent_nanos == 350


@pytest.mark.django_db
def test_spend_lands_in_the_period_of_the_request_not_of_the_write(owner: Any) -> None:
    tenant, key = owner
    budget = budget_set(tenant=tenant, limit_usd=Decimal("1"), period="day")
    today = period_start("day", dt.datetime.now(UTC))
    usage_events_store([event(owner, "late", 5, when=today - dt.timedelta(seconds=1)), event(owner, "now", 7)])
    # Yesterday came before the budget existed: not its business.
    assert dict(BudgetSpend.objects.filter(budget=budget).values_list("period_start", "spent_nanos")) == {today: 7}


@pytest.mark.django_db
def test_crossing_the_soft_limit_raises_one_alert(owner: Any, caplog: Any) -> None:
    tenant, key = owner
    budget = budget_set(tenant=tenant, limit_usd=Decimal("0.000001"), period="day", soft_limit_percent=50)  # 1000
    usage_events_store([event(owner, "x", 400)])
    assert BudgetSpend.objects.get(budget=budget).soft_alerted_at is None
    with caplog.at_level(logging.WARNING, logger="billing.ledger"):
        usage_events_store([event(owner, "y", 200)])
        usage_events_store([event(owner, "z", 200)])
    assert BudgetSpend.objects.get(budget=budget).soft_alerted_at is not None
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "passed its soft limit (50%)" in caplog.records[0].message


@pytest.mark.django_db
def test_a_prepaid_tenants_usage_is_charged_to_its_credit_ledger(owner: Any) -> None:
    tenant, key = owner
    tenant.is_prepaid = True
    tenant.save()
    credit_add(tenant=tenant, amount_usd=Decimal("0.000010"))  # 10_000 nanos
    usage_events_store([event(owner, "p1", 1_500), event(owner, "p2", 2_500)])
    assert credit_balance_nanos(tenant) == 6_000
    assert list(CreditEntry.objects.filter(tenant=tenant, kind="usage").values_list("amount_nanos", flat=True)) == [
        -4_000
    ]


@pytest.mark.django_db
def test_credit_refuses_usage_entries_and_nonpositive_top_ups(owner: Any) -> None:
    tenant, _ = owner
    with pytest.raises(ValueError, match="written by the usage meter"):
        credit_add(tenant=tenant, amount_usd=Decimal("1"), kind="usage")
    with pytest.raises(ValueError, match="positive"):
        credit_add(tenant=tenant, amount_usd=Decimal("0"))
    credit_add(tenant=tenant, amount_usd=Decimal("-2"), kind="adjustment")
    assert credit_balance_nanos(tenant) == -2_000_000_000


def command(*args: str) -> str:
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.mark.django_db
def test_commands_set_several_budgets_and_prepaid_credit() -> None:
    from accounts.models import ApiKey, Tenant
    from billing.models import Budget

    command("tenant_create", "acme", "--prepaid", "--budget", "200", "--budget-period", "month")
    command(
        "key_create", "acme", "--budget", "10", "--budget-period", "day", "--budget", "50", "--budget-period", "week"
    )
    tenant = Tenant.objects.get(slug="acme")
    key = ApiKey.objects.get(tenant=tenant)
    assert tenant.is_prepaid
    assert set(Budget.objects.values_list("tenant_id", "api_key_id", "period", "limit_usd")) == {
        (tenant.pk, None, "month", Decimal("200")),
        (None, key.pk, "day", Decimal("10")),
        (None, key.pk, "week", Decimal("50")),
    }
    assert "balance $25" in command("credit_add", "acme", "25")
    assert credit_balance_nanos(tenant) == 25 * 10**9


@pytest.mark.django_db
def test_a_budget_without_its_period_is_refused() -> None:
    from django.core.management import CommandError

    command("tenant_create", "solo")
    with pytest.raises(CommandError, match="give each --budget its --budget-period"):
        command("key_create", "solo", "--budget", "10")


@pytest.mark.django_db
def test_price_set_takes_every_bucket_and_tier() -> None:
    from billing.models import Price

    command(
        "price_set",
        "claude-x",
        "--input",
        "3",
        "--output",
        "15",
        "--cached-input",
        "0.30",
        "--cache-write-5m",
        "3.75",
        "--cache-write-1h",
        "6",
        "--long-context-threshold",
        "200000",
        "--long-input",
        "6",
        "--long-output",
        "22.50",
        "--request-fee",
        "0.001",
        "--max-output-tokens",
        "64000",
    )
    row = Price.objects.get(model="claude-x")
    assert (
        row.cache_write_1h_usd_per_mtok,
        row.long_context_threshold,
        row.long_output_usd_per_mtok,
        row.request_fee_usd,
        row.max_output_tokens,
        row.source,
    ) == (
        Decimal("6"),
        200_000,
        Decimal("22.50"),
        Decimal("0.001"),
        64_000,
        "manual",
    )


def test_the_worst_case_counts_every_choice_and_each_media_part(settings: Any) -> None:
    from gateway.kernel.context import ProviderConfig, RouteTarget
    from proxy.apis.registry import spec_for
    from proxy.dialects import Dialect
    from proxy.usage import output_limit

    target = RouteTarget("m", ProviderConfig("p", "openai", "http://x"), "m", None)
    assert output_limit({"max_tokens": 1000, "n": 8}, target) == 8000
    assert output_limit({"n": 2}, target) == 2 * settings.BILLING_DEFAULT_MAX_OUTPUT_TOKENS
    image = {"type": "image_url", "image_url": {"url": "https://x/cat.png"}}
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "what?"}, image, image]}]}
    assert spec_for(Dialect.CHAT).texts.media_parts(body) == 2
