"""Hourly and daily rollups add up to the raw records exactly, once, whatever order they arrive in."""

import datetime as dt
import uuid
from typing import Any

import pytest
from django.db.models import Q

from accounts.models import ApiKey
from accounts.services import api_key_issue, tenant_create
from billing.models import UsageRecord, UsageRollup
from billing.reconcile import usage_cost_nanos
from billing.rollups import usage_retention, usage_rollup
from billing.tasks import usage_retention_task, usage_rollup_task

pytestmark = pytest.mark.django_db

UTC = dt.UTC
HOUR_10 = dt.datetime(2025, 3, 4, 10, tzinfo=UTC)
HOUR_11 = dt.datetime(2025, 3, 4, 11, tzinfo=UTC)
DAY_1 = dt.datetime(2025, 3, 4, tzinfo=UTC)
DAY_2 = dt.datetime(2025, 3, 5, tzinfo=UTC)
SUMMED = (
    "requests",
    "errors",
    "cache_hits",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_nanos",
    "saved_nanos",
    "prepaid_cost_nanos",
)


def new_key(slug: str) -> ApiKey:
    return api_key_issue(tenant=tenant_create(slug=slug), name=f"{slug} key")[1]


@pytest.fixture
def key() -> ApiKey:
    return new_key("acme")


def record(api_key: ApiKey, at: dt.datetime, **fields: Any) -> UsageRecord:
    values: dict[str, Any] = {
        "request_id": f"req_{uuid.uuid4().hex}",
        "created_at": at,
        "tenant_id": api_key.tenant_id,
        "api_key": api_key,
        "endpoint": "chat.completions",
        "public_model": "gpt-test",
        "upstream_model": "gpt-up",
        "provider": "fake",
        "status_code": 200,
        **fields,
    }
    return UsageRecord.objects.create(**values)


def rollups(granularity: str, **filters: Any) -> dict[tuple[dt.datetime, str], dict[str, int]]:
    """{(bucket start, model): {summed field: value}} for one tenant or all."""
    rows = UsageRollup.objects.filter(granularity=granularity, **filters)
    return {(r.bucket_start, r.public_model): {f: getattr(r, f) for f in SUMMED} for r in rows}


def sums(**values: int) -> dict[str, int]:
    return {f: values.get(f, 0) for f in SUMMED}


def snapshot() -> list[tuple[Any, ...]]:
    return sorted(UsageRollup.objects.values_list("pk", "granularity", "bucket_start", "public_model", *SUMMED))


@pytest.fixture
def two_days_of_usage(key: ApiKey) -> None:
    """Five records over two hours of one day and one hour of the next."""
    record(
        key,
        HOUR_10 + dt.timedelta(minutes=5),
        input_tokens=100,
        cached_input_tokens=10,
        cache_write_5m_tokens=5,
        cache_write_1h_tokens=1,
        output_tokens=50,
        reasoning_tokens=7,
        cost_nanos=1000,
    )
    record(key, HOUR_10 + dt.timedelta(minutes=55), status_code=429, input_tokens=3)
    record(key, HOUR_10 + dt.timedelta(minutes=20), public_model="other", input_tokens=9, cost_nanos=90)
    record(key, HOUR_11 + dt.timedelta(minutes=30), cache_hit=True, input_tokens=20, output_tokens=4, saved_nanos=300)
    record(key, DAY_2 + dt.timedelta(hours=9), input_tokens=1, output_tokens=2, cost_nanos=7, prepaid=True)


HOURLY = {
    (HOUR_10, "gpt-test"): sums(
        requests=2,
        errors=1,
        input_tokens=103,
        cached_input_tokens=10,
        cache_write_5m_tokens=5,
        cache_write_1h_tokens=1,
        output_tokens=50,
        reasoning_tokens=7,
        cost_nanos=1000,
    ),
    (HOUR_10, "other"): sums(requests=1, input_tokens=9, cost_nanos=90),
    (HOUR_11, "gpt-test"): sums(requests=1, cache_hits=1, input_tokens=20, output_tokens=4, saved_nanos=300),
    (DAY_2 + dt.timedelta(hours=9), "gpt-test"): sums(
        requests=1, input_tokens=1, output_tokens=2, cost_nanos=7, prepaid_cost_nanos=7
    ),
}
DAILY = {
    (DAY_1, "gpt-test"): sums(
        requests=3,
        errors=1,
        cache_hits=1,
        input_tokens=123,
        cached_input_tokens=10,
        cache_write_5m_tokens=5,
        cache_write_1h_tokens=1,
        output_tokens=54,
        reasoning_tokens=7,
        cost_nanos=1000,
        saved_nanos=300,
    ),
    (DAY_1, "other"): sums(requests=1, input_tokens=9, cost_nanos=90),
    (DAY_2, "gpt-test"): sums(requests=1, input_tokens=1, output_tokens=2, cost_nanos=7, prepaid_cost_nanos=7),
}


@pytest.mark.usefixtures("two_days_of_usage")
def test_hourly_and_daily_rollups_equal_the_sums_of_the_raw_records() -> None:
    assert usage_rollup() == 5
    assert rollups("hour") == HOURLY
    assert rollups("day") == DAILY
    assert not UsageRecord.objects.filter(rolled_up=False).exists()


@pytest.mark.usefixtures("two_days_of_usage")
def test_running_the_rollup_again_changes_nothing() -> None:
    usage_rollup()
    before = snapshot()
    assert usage_rollup() == 0
    assert snapshot() == before


@pytest.mark.usefixtures("two_days_of_usage")
def test_a_record_committed_late_into_a_rolled_hour_is_counted_once_by_the_next_run(key: ApiKey) -> None:
    usage_rollup()
    late = record(key, HOUR_10 + dt.timedelta(minutes=1), input_tokens=1000, output_tokens=1, cost_nanos=500)
    owner = Q(tenant_id=key.tenant_id)
    # Budgets and the reconciliation read usage as rollups plus unrolled records: exact before the run...
    assert usage_cost_nanos(owner, owner, DAY_1, DAY_2) == 1590

    assert usage_rollup() == 1

    hour_10 = HOURLY[(HOUR_10, "gpt-test")]
    assert rollups("hour")[(HOUR_10, "gpt-test")] == {
        **hour_10,
        "requests": 3,
        "input_tokens": 1103,
        "output_tokens": 51,
        "cost_nanos": 1500,
    }
    assert rollups("hour")[(HOUR_11, "gpt-test")] == HOURLY[(HOUR_11, "gpt-test")]
    assert rollups("day")[(DAY_1, "gpt-test")]["cost_nanos"] == 1500
    assert rollups("day")[(DAY_1, "gpt-test")]["requests"] == 4
    # ...and after it.
    assert usage_cost_nanos(owner, owner, DAY_1, DAY_2) == 1590
    late.refresh_from_db()
    assert late.rolled_up


@pytest.mark.usefixtures("two_days_of_usage")
def test_two_tenants_using_the_same_model_in_the_same_hour_get_separate_rows(key: ApiKey) -> None:
    other = new_key("globex")
    record(other, HOUR_10 + dt.timedelta(minutes=30), input_tokens=5, output_tokens=6, cost_nanos=11)

    usage_rollup()

    assert rollups("hour", tenant=key.tenant) == HOURLY
    assert rollups("day", tenant=key.tenant) == DAILY
    assert rollups("hour", tenant=other.tenant) == {
        (HOUR_10, "gpt-test"): sums(requests=1, input_tokens=5, output_tokens=6, cost_nanos=11)
    }
    assert rollups("day", tenant=other.tenant) == {
        (DAY_1, "gpt-test"): sums(requests=1, input_tokens=5, output_tokens=6, cost_nanos=11)
    }
    assert set(UsageRollup.objects.filter(tenant=other.tenant).values_list("api_key_id", flat=True)) == {other.pk}


@pytest.mark.usefixtures("two_days_of_usage")
def test_the_celery_task_rolls_up_the_same_way() -> None:
    assert usage_rollup_task() == 5
    assert rollups("hour") == HOURLY
    assert rollups("day") == DAILY
    assert usage_rollup_task() == 0


@pytest.mark.usefixtures("two_days_of_usage")
def test_one_run_drains_everything_due_even_in_small_batches() -> None:
    assert usage_rollup(batch_size=2) == 5
    assert not UsageRecord.objects.filter(rolled_up=False).exists()
    assert rollups("hour") == HOURLY
    assert rollups("day") == DAILY


def test_retention_deletes_only_old_rolled_up_records_in_batches(key: ApiKey) -> None:
    now = dt.datetime.now(UTC)
    old_rolled = [record(key, now - dt.timedelta(days=40, minutes=i), rolled_up=True) for i in range(5)]
    old_unrolled = record(key, now - dt.timedelta(days=50), rolled_up=False)
    recent_rolled = record(key, now - dt.timedelta(days=20), rolled_up=True)

    assert usage_retention(days=30, batch_size=2) == 5

    assert not UsageRecord.objects.filter(pk__in=[r.pk for r in old_rolled]).exists()
    assert set(UsageRecord.objects.values_list("pk", flat=True)) == {old_unrolled.pk, recent_rolled.pk}
    assert usage_retention(days=30, batch_size=2) == 0


def test_a_late_record_in_an_hour_whose_raw_records_were_pruned_is_added_to_its_rows(key: ApiKey) -> None:
    hour = (dt.datetime.now(UTC) - dt.timedelta(days=100)).replace(minute=0, second=0, microsecond=0)
    record(key, hour + dt.timedelta(minutes=1), input_tokens=10, cost_nanos=100)
    record(key, hour + dt.timedelta(minutes=2), input_tokens=20, cost_nanos=200)
    usage_rollup()
    assert usage_retention(days=90) == 2

    record(
        key,
        hour + dt.timedelta(minutes=3),
        status_code=429,
        cache_hit=True,
        prepaid=True,
        input_tokens=40,
        cost_nanos=400,
        saved_nanos=9,
    )
    assert usage_rollup() == 1

    # Rebuilding the hour from what is left would say 1 request and 400 nanos.
    expected = sums(
        requests=3, errors=1, cache_hits=1, input_tokens=70, cost_nanos=700, saved_nanos=9, prepaid_cost_nanos=400
    )
    assert rollups("hour")[(hour, "gpt-test")] == expected
    assert rollups("day")[(hour.replace(hour=0), "gpt-test")] == expected


@pytest.mark.usefixtures("two_days_of_usage")
def test_a_damaged_bucket_is_rebuilt_from_its_records_when_usage_next_lands_in_it(key: ApiKey) -> None:
    usage_rollup()
    UsageRollup.objects.filter(granularity="hour", bucket_start=HOUR_10, public_model="gpt-test").delete()
    UsageRollup.objects.filter(granularity="day", bucket_start=DAY_1, public_model="gpt-test").update(cost_nanos=1)

    record(key, HOUR_10 + dt.timedelta(minutes=9), input_tokens=1, cost_nanos=5)
    usage_rollup()

    assert rollups("hour")[(HOUR_10, "gpt-test")] == {
        **HOURLY[(HOUR_10, "gpt-test")],
        "requests": 3,
        "input_tokens": 104,
        "cost_nanos": 1005,
    }
    assert rollups("day")[(DAY_1, "gpt-test")] == {
        **DAILY[(DAY_1, "gpt-test")],
        "requests": 4,
        "input_tokens": 124,
        "cost_nanos": 1005,
    }


def test_the_retention_task_keeps_the_configured_number_of_days(key: ApiKey, settings: Any) -> None:
    settings.BILLING_USAGE_RETENTION_DAYS = 10
    now = dt.datetime.now(UTC)
    expired = record(key, now - dt.timedelta(days=11), rolled_up=True)
    kept = record(key, now - dt.timedelta(days=9), rolled_up=True)

    assert usage_retention_task() == 1

    assert not UsageRecord.objects.filter(pk=expired.pk).exists()
    assert UsageRecord.objects.filter(pk=kept.pk).exists()


def test_retention_refuses_to_keep_less_than_a_day() -> None:
    with pytest.raises(ValueError, match="at least one day"):
        usage_retention(days=0)


def test_every_task_in_the_beat_schedule_exists() -> None:
    from gateway.celery import app

    app.loader.import_default_modules()
    scheduled = {entry["task"] for entry in app.conf.beat_schedule.values()}
    assert scheduled <= set(app.tasks), scheduled - set(app.tasks)


@pytest.mark.django_db
def test_the_rollup_task_runs_through_celery_eagerly_like_a_worker() -> None:
    from billing.tasks import usage_rollup_task

    assert usage_rollup_task.apply().get() == 0  # nothing due: the task machinery itself works
