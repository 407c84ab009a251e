"""The admin pages staff run the business from: lists that cost the same for 2 rows or 2 million,
keys rotated with their plaintext shown once, prices whose origin and history show at a glance."""

import datetime as dt
import re
import uuid
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.keys import key_digest
from accounts.models import ApiKey, Tenant
from accounts.services import api_key_issue, tenant_create
from billing.admin import large_tables
from billing.admin.large_tables import LargeTablePaginator
from billing.models import Budget, BudgetSpend, Price, PriceSyncRun, ReconciliationReport, UsageRecord
from billing.periods import period_start
from billing.rollups import usage_rollup
from billing.services import budget_set, credit_add, price_set
from gateway.admin import keys_with_last_use

pytestmark = pytest.mark.django_db
KEY_IN_PAGE = re.compile(r"sk-gw-[A-Za-z0-9_\-]{20,}")


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


def tenant_with_money(slug: str) -> Tenant:
    tenant = tenant_create(slug=slug, is_prepaid=True)
    api_key_issue(tenant=tenant)
    api_key_issue(tenant=tenant)
    revoked = api_key_issue(tenant=tenant)[1]
    revoked.revoked_at = timezone.now()
    revoked.save()
    daily = budget_set(limit_usd=Decimal("10"), period="day", tenant=tenant)
    budget_set(limit_usd=Decimal("200"), period="month", tenant=tenant)
    BudgetSpend.objects.filter(budget=daily).update(spent_nanos=1_234_000_000)
    credit_add(tenant=tenant, amount_usd=Decimal("50"))
    credit_add(tenant=tenant, amount_usd=Decimal("-2.5"), kind="adjustment")
    return tenant


# --- Tenants -------------------------------------------------------------------------------


def test_the_tenant_list_shows_live_keys_spend_against_each_budget_and_the_balance(admin_client: Client) -> None:
    tenant = tenant_with_money("acme")
    page = admin_client.get("/admin/accounts/tenant/").content.decode()

    assert f'href="/admin/accounts/apikey/?tenant__id__exact={tenant.pk}">2</a>' in page
    assert "$1.23 of $10.00 per day, $0.00 of $200.00 per month" in page
    assert "$47.50" in page


def test_the_tenant_list_costs_the_same_queries_for_one_tenant_or_many(admin_client: Client) -> None:
    tenant_with_money("first")
    with CaptureQueriesContext(connection) as one:
        assert admin_client.get("/admin/accounts/tenant/").status_code == 200
    for n in range(5):
        tenant_with_money(f"more-{n}")
    with CaptureQueriesContext(connection) as six:
        assert admin_client.get("/admin/accounts/tenant/").status_code == 200
    assert len(six) == len(one)


def test_a_tenant_page_lists_its_budgets_with_this_periods_spend_and_links_to_add_more(admin_client: Client) -> None:
    tenant = tenant_with_money("acme")
    page = admin_client.get(f"/admin/accounts/tenant/{tenant.pk}/change/").content.decode()

    assert "1.234000000" in page  # the daily budget's spend, exact
    assert f'href="/admin/billing/budget/add/?tenant={tenant.pk}">Add a budget</a>' in page
    assert f'href="/admin/billing/creditentry/add/?tenant={tenant.pk}">Add credit</a>' in page


# --- Keys -------------------------------------------------------------------------------------


def test_rotating_a_key_shows_the_new_plaintext_once_keeps_its_settings_and_revokes_the_old(
    admin_client: Client,
) -> None:
    tenant = tenant_create(slug="acme")
    _, old = api_key_issue(tenant=tenant, name="backend", allowed_models=["openai/*"], tags=["team-a"], rpm_limit=60)
    budget_set(limit_usd=Decimal("5"), period="day", api_key=old)

    response = admin_client.post(
        "/admin/accounts/apikey/", {"action": "rotate", "_selected_action": [old.pk]}, follow=True
    )

    [plaintext] = KEY_IN_PAGE.findall(response.content.decode())
    new = ApiKey.objects.get(digest=key_digest(plaintext))
    old.refresh_from_db()
    assert old.is_revoked and not new.is_revoked
    assert (new.tenant_id, new.name, new.allowed_models, new.tags, new.rpm_limit) == (
        tenant.pk,
        "backend",
        ["openai/*"],
        ["team-a"],
        60,
    )
    assert list(Budget.objects.filter(api_key=new).values_list("period", "limit_usd")) == [("day", Decimal("5"))]
    for page in (
        admin_client.get("/admin/accounts/apikey/"),
        admin_client.get(f"/admin/accounts/apikey/{new.pk}/change/"),
    ):
        assert plaintext not in page.content.decode()


def test_a_revoked_key_is_not_rotated(admin_client: Client) -> None:
    _, old = api_key_issue(tenant=tenant_create(slug="acme"))
    old.revoked_at = timezone.now()
    old.save()
    response = admin_client.post(
        "/admin/accounts/apikey/", {"action": "rotate", "_selected_action": [old.pk]}, follow=True
    )
    assert KEY_IN_PAGE.findall(response.content.decode()) == []
    assert ApiKey.objects.count() == 1


def test_last_used_is_the_newest_usage_record_or_else_the_newest_hourly_rollup(admin_client: Client) -> None:
    tenant = tenant_create(slug="acme")
    used, pruned, idle = (api_key_issue(tenant=tenant, name=name)[1] for name in ("used", "pruned", "idle"))
    record(used, dt.datetime(2025, 3, 4, 10, 30, tzinfo=dt.UTC))
    record(used, dt.datetime(2025, 3, 4, 11, 45, tzinfo=dt.UTC))
    record(pruned, dt.datetime(2025, 1, 2, 8, 15, tzinfo=dt.UTC))
    usage_rollup()
    UsageRecord.objects.filter(api_key=pruned).delete()  # as retention does, once rolled up

    keys = {k.pk: k.last_used_at for k in keys_with_last_use(ApiKey.objects.all())}  # type: ignore[attr-defined]

    assert keys == {
        used.pk: dt.datetime(2025, 3, 4, 11, 45, tzinfo=dt.UTC),
        pruned.pk: dt.datetime(2025, 1, 2, 8, tzinfo=dt.UTC),
        idle.pk: None,
    }
    assert admin_client.get("/admin/accounts/apikey/").content.decode().count(">never<") == 1


# --- Prices ------------------------------------------------------------------------------------


def test_the_price_list_marks_hand_set_and_synced_rows_and_the_row_in_force(admin_client: Client) -> None:
    a_week_ago = timezone.now() - dt.timedelta(days=7)
    old, _ = price_set(model="m1", input_usd=Decimal("1"), output_usd=Decimal("2"), effective_from=a_week_ago)
    new, _ = price_set(model="m1", input_usd=Decimal("1.5"), output_usd=Decimal("2"), source=Price.Source.SYNC)
    later, _ = price_set(
        model="m1",
        input_usd=Decimal("9"),
        output_usd=Decimal("9"),
        effective_from=timezone.now() + dt.timedelta(days=1),
    )

    page = admin_client.get("/admin/billing/price/?model=m1").content.decode()
    rows = {pk: page[page.index(f"/admin/billing/price/{pk}/change/") :][:2000] for pk in (old.pk, new.pk, later.pk)}

    assert "Set by hand</span>" in rows[old.pk] and "Price sync</span>" in rows[new.pk]
    assert [('alt="True"' in rows[pk].split("</tr>")[0]) for pk in (old.pk, new.pk, later.pk)] == [False, True, False]
    assert rows[old.pk].count('href="/admin/billing/price/?model=m1">all 3 rows of m1</a>') == 1


# --- Big tables -------------------------------------------------------------------------------------


def test_the_usage_list_counts_matching_rows_only_up_to_the_cap(admin_client: Client, monkeypatch: Any) -> None:
    monkeypatch.setattr(large_tables, "COUNT_CAP", 3)
    key = api_key_issue(tenant=tenant_create(slug="acme"))[1]
    for minute in range(5):
        record(key, dt.datetime(2025, 3, 4, 10, minute, tzinfo=dt.UTC))

    assert LargeTablePaginator(UsageRecord.objects.all(), 100).count == 3
    assert LargeTablePaginator(UsageRecord.objects.filter(created_at__minute__lt=2), 100).count == 2
    with CaptureQueriesContext(connection) as queries:
        page = admin_client.get("/admin/billing/usagerecord/?status=ok").content.decode()
    assert "3 results" in page
    assert not any(re.search(r"SELECT COUNT\(\*\) AS .__count. FROM .billing_usagerecord.", q["sql"]) for q in queries)


def test_an_unfiltered_table_past_the_cap_is_counted_by_the_planners_estimate(monkeypatch: Any) -> None:
    monkeypatch.setattr(large_tables, "table_row_estimate", lambda alias, table: 1_000_000)
    assert LargeTablePaginator(UsageRecord.objects.all(), 100).count == 1_000_000
    assert LargeTablePaginator(UsageRecord.objects.filter(status_code=500), 100).count == 0


def test_the_planners_estimate_is_only_read_on_postgresql() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE billing_usagerecord")  # a new table has no estimate before its first
    estimate = large_tables.table_row_estimate("default", "billing_usagerecord")
    assert (estimate is None) == (connection.vendor != "postgresql")


def test_the_books_records_are_read_only(admin_client: Client) -> None:
    run = PriceSyncRun.objects.create(source="x", ok=False, error="HTTP 503")
    report = ReconciliationReport.objects.create(ok=False, differences=[{"a": 1}])
    for base, pk in (("/admin/billing/pricesyncrun/", run.pk), ("/admin/billing/reconciliationreport/", report.pk)):
        assert admin_client.get(base).status_code == 200
        assert admin_client.get(f"{base}add/").status_code == 403
        assert admin_client.get(f"{base}{pk}/delete/").status_code == 403
        change = admin_client.get(f"{base}{pk}/change/").content.decode()
        assert 'name="_save"' not in change


def test_the_admin_index_links_to_the_dashboard(admin_client: Client) -> None:
    assert 'href="/admin/dashboard/">Dashboard</a>' in admin_client.get("/admin/").content.decode()


def test_budget_spend_this_period_on_the_budget_list_is_the_current_periods(admin_client: Client) -> None:
    tenant = tenant_create(slug="acme")
    budget = budget_set(limit_usd=Decimal("10"), period="day", tenant=tenant)
    BudgetSpend.objects.filter(budget=budget).update(spent_nanos=7)
    yesterday = period_start("day", timezone.now()) - dt.timedelta(days=1)
    BudgetSpend.objects.create(budget=budget, period_start=yesterday, spent_nanos=99)
    assert (
        '<td class="field-spent_this_period">0.000000007</td>'
        in admin_client.get("/admin/billing/budget/").content.decode()
    )


def test_the_date_links_span_the_first_to_the_last_record_without_a_distinct_scan(admin_client: Client) -> None:
    key = api_key_issue(tenant=tenant_create(slug="acme"))[1]
    record(key, dt.datetime(2025, 1, 31, 23, 59, tzinfo=dt.UTC))
    record(key, dt.datetime(2025, 3, 1, 0, 0, tzinfo=dt.UTC))

    with CaptureQueriesContext(connection) as queries:
        page = admin_client.get("/admin/billing/usagerecord/").content.decode()
    days = admin_client.get("/admin/billing/usagerecord/?created_at__year=2025&created_at__month=1").content.decode()

    links = re.findall(r'href="\?created_at__month=(\d+)&amp;created_at__year=2025"', page)
    assert links == ["1", "2", "3"]  # February has no records, and is offered all the same
    assert re.findall(r"created_at__day=(\d+)", days) == [str(d) for d in range(31, 32)]
    assert not any("DISTINCT" in q["sql"] for q in queries)


def test_a_search_for_a_tenant_slug_filters_by_the_tenants_id(admin_client: Client) -> None:
    acme, other = (api_key_issue(tenant=tenant_create(slug=slug))[1] for slug in ("acme", "other"))
    mine = record(acme, dt.datetime(2025, 3, 4, tzinfo=dt.UTC))
    record(other, dt.datetime(2025, 3, 4, tzinfo=dt.UTC))
    by_model = record(other, dt.datetime(2025, 3, 4, tzinfo=dt.UTC), public_model="m-7")

    assert set(large_tables.exact_search(UsageRecord.objects.all(), "acme")) == {mine}
    assert set(large_tables.exact_search(UsageRecord.objects.all(), "m-7")) == {by_model}
    with CaptureQueriesContext(connection) as queries:
        admin_client.get("/admin/billing/usagerecord/?q=acme")
    assert [q["sql"] for q in queries if " OR " in q["sql"] and "acme" in q["sql"]] == []
