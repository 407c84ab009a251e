"""The dashboard reads everything from the rollups, latency percentiles included; alerts say what needs a person."""

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import ApiKey
from accounts.services import api_key_issue, tenant_create
from billing import dashboard
from billing.alerts import Alert, alerts_current
from billing.dashboard import Window, dashboard_data, projected_nanos, spend_stacks, traffic
from billing.histograms import BUCKET_COUNT, LATENCY_COLUMNS, TTFT_COLUMNS, histogram_of, percentile_ms
from billing.models import BudgetSpend, Price, PriceSyncRun, ReconciliationReport, UsageRecord, UsageRollup
from billing.rollups import usage_rollup
from billing.services import budget_set, price_set

UTC = dt.UTC
NOW = dt.datetime(2025, 3, 5, 12, 30, tzinfo=UTC)
TODAY = dt.datetime(2025, 3, 5, tzinfo=UTC)
YESTERDAY = TODAY - dt.timedelta(days=1)


def counts(**by_index: int) -> list[int]:
    histogram = [0] * BUCKET_COUNT
    for index, count in by_index.items():
        histogram[int(index.removeprefix("b"))] = count
    return histogram


# --- Percentiles from histograms (pure) ----------------------------------------------------


def test_an_observation_on_a_bound_falls_in_the_bucket_above_it() -> None:
    assert histogram_of(100) == tuple(counts(b3=1))  # [100, 200)
    assert histogram_of(99) == tuple(counts(b2=1))  # [50, 100)
    assert histogram_of(None) == (0,) * BUCKET_COUNT


def test_a_percentile_is_interpolated_inside_its_bucket() -> None:
    ten_between_100_and_200 = counts(b3=10)
    assert percentile_ms(ten_between_100_and_200, 50) == 150
    assert percentile_ms(ten_between_100_and_200, 95) == 195


def test_a_percentile_counts_the_observations_below_its_bucket() -> None:
    # 90 fast requests under 25 ms and 10 slow ones in [1000, 1500): p50 is fast, p95 half way up the slow bucket.
    histogram = counts(b0=90, b8=10)
    assert (percentile_ms(histogram, 50), percentile_ms(histogram, 95)) == (13, 1250)


def test_a_percentile_in_the_open_last_bucket_is_its_floor_and_none_without_observations() -> None:
    assert percentile_ms(counts(b15=3), 50) == 60000
    assert percentile_ms(counts(), 50) is None


def test_a_projection_extends_the_pace_so_far_to_the_end_of_the_period() -> None:
    start, end = TODAY, TODAY + dt.timedelta(days=1)
    assert projected_nanos(1_000, start, end, start + dt.timedelta(hours=6)) == 4_000
    assert projected_nanos(1_000, start, None, NOW) is None
    # In the first minute there is no pace yet: it counts as one minute.
    assert projected_nanos(10, start, end, start + dt.timedelta(seconds=1)) == 10 * 1440


# --- Rollups carry the histograms --------------------------------------------------------


def new_key(slug: str) -> ApiKey:
    return api_key_issue(tenant=tenant_create(slug=slug), name=f"{slug} key")[1]


def gpt_up_price() -> Price:
    return (
        Price.objects.filter(model="gpt-up").first()
        or price_set(model="gpt-up", input_usd=Decimal("1"), output_usd=Decimal("2"))[0]
    )


def record(api_key: ApiKey, at: dt.datetime, **fields: Any) -> UsageRecord:
    """A priced usage row (pass price=None for an unpriced one)."""
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
        "latency_ms": 120,
        **fields,
    }
    if "price" not in values:
        values["price"] = gpt_up_price()
    return UsageRecord.objects.create(**values)


def histogram_columns(row: UsageRollup, columns: tuple[str, ...]) -> list[int]:
    return [getattr(row, name) for name in columns]


@pytest.mark.django_db
def test_rollups_count_each_record_once_in_its_latency_and_ttft_buckets() -> None:
    key = new_key("acme")
    hour = TODAY.replace(hour=10)
    record(key, hour, latency_ms=40, ttft_ms=30, stream=True)
    record(key, hour + dt.timedelta(minutes=1), latency_ms=150)
    record(key, hour + dt.timedelta(minutes=2), latency_ms=150)
    record(key, hour + dt.timedelta(minutes=3), latency_ms=70_000, status_code=502)
    usage_rollup()
    usage_rollup()  # a rerun changes nothing
    record(key, hour + dt.timedelta(minutes=4), latency_ms=20, ttft_ms=10, stream=True)  # arrives late
    usage_rollup()

    for granularity in ("hour", "day"):
        row = UsageRollup.objects.get(granularity=granularity)
        assert histogram_columns(row, LATENCY_COLUMNS) == counts(b0=1, b1=1, b3=2, b15=1)
        assert histogram_columns(row, TTFT_COLUMNS) == counts(b0=1, b1=1)
        assert (row.requests, row.errors) == (5, 1)


# --- The dashboard's numbers ------------------------------------------------------------------


@pytest.fixture
def two_tenants_usage() -> tuple[ApiKey, ApiKey]:
    acme, beta = new_key("acme"), new_key("beta")
    record(acme, YESTERDAY.replace(hour=9), cost_nanos=3_000, latency_ms=150)
    record(acme, TODAY.replace(hour=10), cost_nanos=1_000, latency_ms=150, public_model="other")
    record(acme, TODAY.replace(hour=10, minute=5), status_code=429, latency_ms=30)
    record(
        beta,
        TODAY.replace(hour=11),
        cost_nanos=500,
        cache_hit=True,
        saved_nanos=700,
        latency_ms=10,
        ttft_ms=5,
        stream=True,
    )
    usage_rollup()
    return acme, beta


@pytest.mark.django_db
def test_spend_is_stacked_per_day_by_tenant_and_by_model(two_tenants_usage: Any) -> None:
    spend = spend_stacks(Window.last(2, "day", NOW))

    assert spend["by_tenant"] == {
        "labels": [YESTERDAY.isoformat(), TODAY.isoformat()],
        "series": [{"name": "acme", "values": [3_000, 1_000]}, {"name": "beta", "values": [0, 500]}],
    }
    assert spend["by_model"]["series"] == [
        {"name": "gpt-test", "values": [3_000, 500]},
        {"name": "other", "values": [0, 1_000]},
    ]


@pytest.mark.django_db
def test_past_the_top_spenders_the_rest_is_one_band(two_tenants_usage: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(dashboard, "TOP_SERIES", 0)
    assert spend_stacks(Window.last(2, "day", NOW))["by_tenant"]["series"] == [
        {"name": "other", "values": [3_000, 1_500]}
    ]


@pytest.mark.django_db
def test_traffic_has_requests_error_rate_percentiles_and_cache_per_bucket(two_tenants_usage: Any) -> None:
    window = Window(granularity="hour", start=TODAY.replace(hour=10), end=TODAY.replace(hour=12))

    assert traffic(window) == {
        "granularity": "hour",
        "labels": [TODAY.replace(hour=10).isoformat(), TODAY.replace(hour=11).isoformat()],
        "requests": [2, 1],
        "errors": [1, 0],
        "error_rate": [0.5, 0.0],
        "latency_p50_ms": [50, 12],  # one in [25, 50), one in [100, 200): the median is their boundary
        "latency_p95_ms": [190, 23],
        "ttft_p50_ms": [None, 12],
        "ttft_p95_ms": [None, 23],
        "cache_hits": [0, 1],
        "cache_hit_rate": [0.0, 1.0],
        "saved_nanos": [0, 700],
        "cost_nanos": [1_000, 500],
    }


@pytest.mark.django_db
def test_a_week_is_drawn_per_hour_and_longer_periods_per_day(two_tenants_usage: Any) -> None:
    week, month = dashboard_data(7, now=NOW), dashboard_data(30, now=NOW)
    assert (week["traffic"]["granularity"], len(week["traffic"]["labels"])) == ("hour", 168)
    assert week["traffic"]["labels"][-1] == TODAY.replace(hour=12).isoformat()
    assert (month["traffic"]["granularity"], len(month["traffic"]["labels"])) == ("day", 30)
    assert len(week["spend_by_tenant"]["labels"]) == 7
    assert week["rolled_up_until"] == TODAY.replace(hour=11).isoformat()
    with pytest.raises(ValueError):
        dashboard_data(12, now=NOW)


@pytest.mark.django_db
def test_the_burn_down_lists_budgets_by_use_with_their_projection() -> None:
    acme, beta = new_key("acme"), new_key("beta")
    daily = budget_set(limit_usd=Decimal("0.00001"), period="day", tenant=acme.tenant)
    budget_set(limit_usd=Decimal("1"), period="total", api_key=beta)
    BudgetSpend.objects.filter(budget=daily).update(period_start=TODAY, spent_nanos=5_000)
    BudgetSpend.objects.create(budget=daily, period_start=YESTERDAY, spent_nanos=9_999)  # another period

    rows = dashboard.budget_burndown(TODAY.replace(hour=6))

    assert [
        (r["owner"], r["spent_nanos"], r["limit_nanos"], r["projected_nanos"], r["used_per_mille"]) for r in rows
    ] == [
        ("tenant acme", 5_000, 10_000, 20_000, 500),
        (f"key {beta.prefix} (beta key)", 0, 1_000_000_000, None, 0),
    ]


# --- Alerts -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_deployment_failing_past_the_threshold_raises_an_alert(settings: Any) -> None:
    settings.ALERT_ERROR_RATE, settings.ALERT_WINDOW_MINUTES, settings.ALERT_MIN_REQUESTS = 0.2, 15, 5
    key = new_key("acme")
    for status in (200, 200, 200, 401, 503):  # 2 of 5 failed
        record(key, NOW - dt.timedelta(minutes=5), status_code=status)
    for status in (500, 500, 500, 500, 500):  # failing, but before the window
        record(key, NOW - dt.timedelta(minutes=20), status_code=status, upstream_model="old")
    for status in (400, 400, 400, 400, 200):  # the client's fault, not the deployment's
        record(key, NOW - dt.timedelta(minutes=1), status_code=status, upstream_model="picky")
    for status in (500, 500):  # too few requests to tell
        record(key, NOW - dt.timedelta(minutes=1), status_code=status, upstream_model="rare")

    assert alerts_current(NOW) == [
        Alert(
            kind="error_rate",
            title="fake / gpt-up: 40% of requests failed",
            detail="2 of 5 requests in the last 15 minutes answered 401, 404, 429 or 5xx.",
            url="/admin/billing/usagerecord/?provider=fake",
        ),
    ]


@pytest.mark.django_db
def test_a_budget_past_its_soft_limit_raises_an_alert() -> None:
    acme, beta = new_key("acme"), new_key("beta")
    warned = budget_set(limit_usd=Decimal("0.00001"), period="day", tenant=acme.tenant, soft_limit_percent=80)
    calm = budget_set(limit_usd=Decimal("0.00001"), period="day", tenant=beta.tenant, soft_limit_percent=80)
    BudgetSpend.objects.filter(budget=warned).update(period_start=TODAY, spent_nanos=8_000)
    BudgetSpend.objects.filter(budget=calm).update(period_start=TODAY, spent_nanos=7_999)

    assert alerts_current(TODAY.replace(hour=6)) == [
        Alert(
            kind="budget",
            title="Budget of tenant acme is past its 80% soft limit",
            detail="0.000008000 of 0.000010000 USD spent this day.",
            url=f"/admin/billing/budget/{warned.pk}/change/",
        ),
    ]


@pytest.mark.django_db
def test_only_the_latest_reconciliation_and_price_sync_count() -> None:
    ReconciliationReport.objects.create(created_at=NOW - dt.timedelta(hours=2), ok=False, differences=[{"x": 1}])
    bad = ReconciliationReport.objects.create(created_at=NOW, ok=False, differences=[{"a": 1}, {"b": 2}])
    PriceSyncRun.objects.create(started_at=NOW - dt.timedelta(days=1), source="x", ok=False, error="old")
    failed = PriceSyncRun.objects.create(started_at=NOW, source="x", ok=False, error="HTTP 503 from the pricing file")

    assert alerts_current(NOW) == [
        Alert(
            kind="reconciliation",
            title="The books disagree: 2 differences",
            detail="Reconciliation of 2025-03-05 12:30 UTC.",
            url=f"/admin/billing/reconciliationreport/{bad.pk}/change/",
        ),
        Alert(
            kind="price_sync",
            title="The last price sync failed",
            detail="2025-03-05 12:30 UTC: HTTP 503 from the pricing file",
            url=f"/admin/billing/pricesyncrun/{failed.pk}/change/",
        ),
    ]
    ReconciliationReport.objects.create(created_at=NOW + dt.timedelta(hours=1), ok=True)
    PriceSyncRun.objects.create(started_at=NOW + dt.timedelta(hours=1), source="x", ok=True)
    assert alerts_current(NOW) == []


# --- The pages -------------------------------------------------------------------------------------


@pytest.fixture
def recent_usage() -> ApiKey:
    """Usage yesterday by the clock, rolled up: what a page for the last days shows."""
    key = new_key("acme")
    record(key, timezone.now() - dt.timedelta(days=1), cost_nanos=3_000)
    usage_rollup()
    return key


@pytest.mark.django_db
def test_the_dashboard_and_its_data_are_for_staff_only(client: Client, django_user_model: Any) -> None:
    for url in ("/admin/dashboard/", "/admin/dashboard/data.json"):
        assert client.get(url).status_code == 302  # to the login page
    client.force_login(django_user_model.objects.create_user("user", password="x", is_staff=False))
    assert client.get("/admin/dashboard/data.json").status_code == 302


@pytest.mark.django_db
def test_the_dashboard_shows_alerts_and_every_chart_as_a_table(admin_client: Client, recent_usage: Any) -> None:
    PriceSyncRun.objects.create(source="x", ok=False, error="HTTP 503")

    page = admin_client.get("/admin/dashboard/?days=30").content.decode()

    assert "The last price sync failed" in page
    for chart in ("spend_by_tenant", "spend_by_model", "requests", "latency", "cache", "budgets"):
        assert f'data-chart="{chart}"' in page
    assert 'data-days="30"' in page and 'aria-current="true">30 days' in page
    assert "<td>0.000003000</td>" in page  # acme's spend yesterday, exact, in the table
    assert 'id="live-feed"' in page


@pytest.mark.django_db
def test_the_data_endpoint_answers_the_period_asked_or_a_week(admin_client: Client, recent_usage: Any) -> None:
    month = admin_client.get("/admin/dashboard/data.json?days=90").json()
    fallback = admin_client.get("/admin/dashboard/data.json?days=13").json()
    assert (month["days"], len(month["spend_by_tenant"]["labels"])) == (90, 90)
    assert month["spend_by_tenant"]["series"] == [{"name": "acme", "values": [0] * 88 + [3_000, 0]}]
    assert (fallback["days"], fallback["traffic"]["granularity"]) == (7, "hour")
    assert month["nanos_per_usd"] == 1_000_000_000


@pytest.mark.django_db
def test_the_dashboard_can_show_one_tenant_alone() -> None:
    now = timezone.now()
    totals = {}
    for slug, cost in (("shown", 7), ("hidden", 1000)):
        tenant = tenant_create(slug=slug, name=slug)
        _, key = api_key_issue(tenant=tenant, name="k")
        UsageRollup.objects.create(
            granularity=UsageRollup.Granularity.DAY,
            tenant=tenant,
            api_key=key,
            bucket_start=now.replace(hour=0, minute=0, second=0, microsecond=0),
            public_model="m",
            provider="p",
            requests=1,
            cost_nanos=cost,
        )
        totals[slug] = tenant.pk
    data = dashboard_data(7, now, tenant_id=totals["shown"])
    assert [series["name"] for series in data["spend_by_tenant"]["series"]] == ["shown"]
    assert sum(data["spend_by_tenant"]["series"][0]["values"]) == 7


@pytest.mark.django_db
def test_a_model_answering_without_a_price_raises_an_alert_that_links_to_its_requests(
    settings: Any, admin_client: Client
) -> None:
    settings.ALERT_UNPRICED_WINDOW_HOURS = 24
    key = new_key("acme")
    for _ in range(3):  # allowed through at no cost
        record(key, NOW - dt.timedelta(hours=2), price=None, upstream_model="free-lunch")
    record(key, NOW - dt.timedelta(hours=1), price=None, upstream_model="defaulted", cost_nanos=30_000_000)
    record(key, NOW - dt.timedelta(hours=30), price=None, upstream_model="long-ago")  # before the window
    record(key, NOW - dt.timedelta(hours=1), price=None, upstream_model="cached", cache_hit=True)  # cost nothing
    record(key, NOW - dt.timedelta(hours=1), price=None, upstream_model="broken", status_code=502)  # not served
    record(key, NOW - dt.timedelta(hours=1))  # priced

    assert alerts_current(NOW) == [
        Alert(
            kind="unpriced",
            title="fake / free-lunch answered 3 requests without a price",
            detail="In the last 24 hours, charged 0.000000000 USD (nothing); last at 2025-03-05 10:30 UTC. "
            "Set its price with price_set or in admin.",
            url="/admin/billing/usagerecord/?provider=fake&upstream_model=free-lunch",
        ),
        Alert(
            kind="unpriced",
            title="fake / defaulted answered 1 requests without a price",
            detail="In the last 24 hours, charged 0.030000000 USD (default rates); last at 2025-03-05 11:30 UTC. "
            "Set its price with price_set or in admin.",
            url="/admin/billing/usagerecord/?provider=fake&upstream_model=defaulted",
        ),
    ]
    listed = admin_client.get("/admin/billing/usagerecord/?provider=fake&upstream_model=free-lunch").content.decode()
    assert listed.count("free-lunch") >= 3 and "defaulted" not in listed
