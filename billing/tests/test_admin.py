"""The billing admin: exact CSV exports of the ledger, budgets and credit written through the services,
and a usage ledger nobody can edit."""

import csv
import datetime as dt
import http.cookiejar
import io
import re
import urllib.parse
import urllib.request
import uuid
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from accounts.models import ApiKey, ConfigVersion
from accounts.services import api_key_issue, tenant_create
from billing.models import Budget, BudgetSpend, CreditEntry, UsageRecord
from billing.periods import period_start
from billing.rollups import usage_rollup
from proxy.tests.live import LiveGateway

USAGE_HEADER = [
    "created_at",
    "request_id",
    "tenant",
    "key_prefix",
    "key_name",
    "endpoint",
    "model",
    "upstream_model",
    "provider",
    "status_code",
    "error_code",
    "stream",
    "cache_hit",
    "usage_estimated",
    "client_disconnected",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_usd",
    "saved_usd",
    "prepaid",
    "latency_ms",
    "ttft_ms",
]
AT = dt.datetime(2025, 3, 4, 10, 30, tzinfo=dt.UTC)


def new_key(slug: str) -> ApiKey:
    return api_key_issue(tenant=tenant_create(slug=slug), name="backend")[1]


def unsaved(api_key: ApiKey, **fields: Any) -> UsageRecord:
    values: dict[str, Any] = {
        "request_id": f"req_{uuid.uuid4().hex}",
        "created_at": AT,
        "tenant_id": api_key.tenant_id,
        "api_key": api_key,
        "endpoint": "chat.completions",
        "public_model": "gpt-test",
        "upstream_model": "gpt-up",
        "provider": "fake",
        "status_code": 200,
        "input_tokens": 12,
        "output_tokens": 20,
        "cost_nanos": 13_800,
        "latency_ms": 40,
        **fields,
    }
    return UsageRecord(**values)


def record(api_key: ApiKey, **fields: Any) -> UsageRecord:
    usage = unsaved(api_key, **fields)
    usage.save()
    return usage


def csv_rows(response: Any) -> list[list[str]]:
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith("attachment; filename=")
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


def row_of(rows: list[list[str]], request_id: str) -> dict[str, str]:
    header = rows[0]
    [row] = [r for r in rows[1:] if r[header.index("request_id")] == request_id]
    return dict(zip(header, row, strict=True))


EXPORT_USAGE = "admin:billing_usagerecord_export_csv"


@pytest.mark.django_db
def test_the_usage_export_has_a_header_and_the_exact_values_of_each_record(admin_client: Client) -> None:
    key = new_key("acme")
    ok = record(key, cached_input_tokens=3, reasoning_tokens=5, ttft_ms=9)
    failed = record(
        key,
        created_at=AT + dt.timedelta(minutes=1),
        status_code=502,
        error_code="upstream_unreachable",
        input_tokens=0,
        output_tokens=0,
        cost_nanos=0,
        stream=True,
    )

    rows = csv_rows(admin_client.get(reverse(EXPORT_USAGE)))

    assert rows[0] == USAGE_HEADER
    assert len(rows) == 3
    assert row_of(rows, ok.request_id) == {
        "created_at": "2025-03-04T10:30:00+00:00",
        "request_id": ok.request_id,
        "tenant": "acme",
        "key_prefix": key.prefix,
        "key_name": "backend",
        "endpoint": "chat.completions",
        "model": "gpt-test",
        "upstream_model": "gpt-up",
        "provider": "fake",
        "status_code": "200",
        "error_code": "",
        "stream": "False",
        "cache_hit": "False",
        "usage_estimated": "False",
        "client_disconnected": "False",
        "input_tokens": "12",
        "cached_input_tokens": "3",
        "cache_write_5m_tokens": "0",
        "cache_write_1h_tokens": "0",
        "output_tokens": "20",
        "reasoning_tokens": "5",
        "cost_usd": "0.000013800",
        "saved_usd": "0.000000000",
        "prepaid": "False",
        "latency_ms": "40",
        "ttft_ms": "9",
    }
    failed_row = row_of(rows, failed.request_id)
    assert (failed_row["status_code"], failed_row["error_code"], failed_row["cost_usd"], failed_row["ttft_ms"]) == (
        "502",
        "upstream_unreachable",
        "0.000000000",
        "",
    )
    assert rows[1][1] == failed.request_id  # newest first, as the list shows them


@pytest.mark.django_db
def test_the_export_button_exports_what_the_current_filters_select(admin_client: Client) -> None:
    key, other = new_key("acme"), new_key("globex")
    record(key, status_code=200)
    failed = record(key, status_code=503)
    record(other, status_code=503)

    page = admin_client.get(reverse("admin:billing_usagerecord_changelist") + "?status=5xx&q=acme")
    assert page.status_code == 200
    link = re.search(r'href="([^"]*export\.csv[^"]*)"', page.content.decode())
    assert link is not None
    href = urllib.parse.urlsplit(link.group(1).replace("&amp;", "&"))
    assert href.path == reverse(EXPORT_USAGE)
    assert urllib.parse.parse_qs(href.query) == {"status": ["5xx"], "q": ["acme"]}

    rows = csv_rows(admin_client.get(f"{href.path}?{href.query}"))
    assert [r[1] for r in rows[1:]] == [failed.request_id]


@pytest.mark.django_db
def test_the_export_action_exports_the_ticked_records(admin_client: Client) -> None:
    key = new_key("acme")
    ticked, _ = record(key), record(key)

    response = admin_client.post(
        reverse("admin:billing_usagerecord_changelist"), {"action": "export_csv", "_selected_action": [ticked.pk]}
    )

    assert [r[1] for r in csv_rows(response)[1:]] == [ticked.request_id]


@pytest.mark.django_db
def test_text_a_spreadsheet_would_run_as_a_formula_is_exported_inert(admin_client: Client) -> None:
    hostile = record(new_key("acme"), public_model='=HYPERLINK("http://x")', error_code="@SUM(1)")

    row = row_of(csv_rows(admin_client.get(reverse(EXPORT_USAGE))), hostile.request_id)

    assert (row["model"], row["error_code"]) == ('\'=HYPERLINK("http://x")', "'@SUM(1)")


@pytest.mark.django_db
def test_the_rollup_export_has_the_exact_sums(admin_client: Client) -> None:
    key = new_key("acme")
    record(key)
    record(key, created_at=AT + dt.timedelta(minutes=5), prepaid=True, saved_nanos=7)
    usage_rollup()

    rows = csv_rows(admin_client.get(reverse("admin:billing_usagerollup_export_csv") + "?granularity=day"))

    header = rows[0]
    assert len(rows) == 2
    day = dict(zip(header, rows[1], strict=True))
    assert {
        k: day[k]
        for k in (
            "granularity",
            "bucket_start",
            "tenant",
            "key_prefix",
            "model",
            "requests",
            "input_tokens",
            "output_tokens",
            "cost_usd",
            "saved_usd",
            "prepaid_cost_usd",
        )
    } == {
        "granularity": "day",
        "bucket_start": "2025-03-04T00:00:00+00:00",
        "tenant": "acme",
        "key_prefix": key.prefix,
        "model": "gpt-test",
        "requests": "2",
        "input_tokens": "24",
        "output_tokens": "40",
        "cost_usd": "0.000027600",
        "saved_usd": "0.000000007",
        "prepaid_cost_usd": "0.000013800",
    }


BUDGET_INLINE = {
    "spends-TOTAL_FORMS": "0",
    "spends-INITIAL_FORMS": "0",
    "spends-MIN_NUM_FORMS": "0",
    "spends-MAX_NUM_FORMS": "1000",
}


@pytest.mark.django_db
def test_a_budget_added_in_the_admin_starts_with_what_the_tenant_already_spent_today(admin_client: Client) -> None:
    key = new_key("acme")
    now = dt.datetime.now(dt.UTC)
    record(key, created_at=now, cost_nanos=5_000)
    record(key, created_at=now, cost_nanos=2_500)
    record(key, created_at=now - dt.timedelta(days=2), cost_nanos=1_000_000)  # another day: not this budget's

    response = admin_client.post(
        reverse("admin:billing_budget_add"),
        {
            "tenant": key.tenant_id,
            "api_key": "",
            "period": "day",
            "limit_usd": "1",
            "soft_limit_percent": "80",
            "is_active": "on",
            **BUDGET_INLINE,
        },
    )

    assert response.status_code == 302
    budget = Budget.objects.get(tenant_id=key.tenant_id)
    spend = BudgetSpend.objects.get(budget=budget)
    assert (spend.period_start, spend.spent_nanos) == (period_start("day", now), 7_500)
    listing = admin_client.get(reverse("admin:billing_budget_changelist")).content.decode()
    assert "0.000007500" in listing
    detail = admin_client.get(reverse("admin:billing_budget_change", args=[budget.pk])).content.decode()
    assert "0.000007500" in detail


@pytest.mark.django_db
def test_a_budget_must_belong_to_a_tenant_or_a_key_but_not_both(admin_client: Client) -> None:
    key = new_key("acme")
    for owner in ({"tenant": "", "api_key": ""}, {"tenant": key.tenant_id, "api_key": key.pk}):
        response = admin_client.post(
            reverse("admin:billing_budget_add"),
            {**owner, "period": "day", "limit_usd": "1", "soft_limit_percent": "80", **BUDGET_INLINE},
        )
        assert response.status_code == 200
        assert "A budget belongs to a tenant or to one key" in response.content.decode()
    assert not Budget.objects.exists()


@pytest.mark.django_db
def test_a_top_up_in_the_admin_goes_through_the_credit_service_and_shows_the_balance(admin_client: Client) -> None:
    tenant = tenant_create(slug="acme", is_prepaid=True)
    CreditEntry.objects.create(tenant=tenant, kind=CreditEntry.Kind.USAGE, amount_nanos=-500_000_000)
    version = ConfigVersion.objects.get_or_create(pk=1)[0].version

    response = admin_client.post(
        reverse("admin:billing_creditentry_add"),
        {"tenant": tenant.pk, "kind": "topup", "amount_usd": "25.5", "note": "invoice 42"},
        follow=True,
    )

    entry = CreditEntry.objects.get(kind=CreditEntry.Kind.TOPUP)
    assert (entry.tenant, entry.amount_nanos, entry.note) == (tenant, 25_500_000_000, "invoice 42")
    assert ConfigVersion.objects.get(pk=1).version > version  # the service tells every process
    page = response.content.decode()
    assert "Balance of acme is now 25.000000000 USD." in page
    assert page.count("25.000000000") >= 3  # the message and the balance column of both entries


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kind", "amount", "error"),
    [
        ("topup", "-5", "must be a positive amount"),
        ("refund", "0", "must be a positive amount"),
        ("usage", "5", "Select a valid choice"),
        ("topup", "0.0000000001", "no more than 9 decimal places"),
    ],
    ids=["negative-top-up", "zero-refund", "usage", "finer-than-a-nano"],
)
def test_a_credit_entry_the_ledger_would_refuse_is_refused_by_the_form(
    admin_client: Client, kind: str, amount: str, error: str
) -> None:
    tenant = tenant_create(slug="acme")

    response = admin_client.post(
        reverse("admin:billing_creditentry_add"), {"tenant": tenant.pk, "kind": kind, "amount_usd": amount}
    )

    assert response.status_code == 200
    assert error in response.content.decode()
    assert not CreditEntry.objects.exists()


@pytest.mark.django_db
def test_credit_entries_cannot_be_edited_or_deleted(admin_client: Client) -> None:
    entry = CreditEntry.objects.create(tenant=tenant_create(slug="acme"), kind="usage", amount_nanos=-7)

    change = admin_client.post(reverse("admin:billing_creditentry_change", args=[entry.pk]), {"note": "edited"})
    delete = admin_client.post(reverse("admin:billing_creditentry_delete", args=[entry.pk]), {"post": "yes"})

    assert (change.status_code, delete.status_code) == (403, 403)
    entry.refresh_from_db()
    assert (entry.amount_nanos, entry.note) == (-7, "")


@pytest.mark.django_db
def test_usage_records_are_read_only(admin_client: Client) -> None:
    usage = record(new_key("acme"))
    change_url = reverse("admin:billing_usagerecord_change", args=[usage.pk])

    assert admin_client.get(reverse("admin:billing_usagerecord_add")).status_code == 403
    assert admin_client.post(change_url, {"cost_nanos": "0"}).status_code == 403
    delete_url = reverse("admin:billing_usagerecord_delete", args=[usage.pk])
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 403
    view = admin_client.get(change_url)
    assert view.status_code == 200
    assert 'name="_save"' not in view.content.decode()
    usage.refresh_from_db()
    assert usage.cost_nanos == 13_800


def test_the_export_streams_past_one_chunk_under_daphne(live_gateway: LiveGateway, django_db_blocker: Any) -> None:
    """The ASGI path pulls rows in a worker thread; check it against the served gateway."""
    from django.contrib.auth.models import User

    slug = f"t-{uuid.uuid4().hex[:12]}"
    with django_db_blocker.unblock():
        key = new_key(slug)
        UsageRecord.objects.bulk_create(
            unsaved(
                key, request_id=f"req_{slug}_{i:05d}", created_at=AT + dt.timedelta(seconds=i), cost_nanos=13_800 + i
            )
            for i in range(2_500)
        )
        User.objects.create_superuser(username=slug, password="pw-" + slug)

    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    login_url = live_gateway.url + "/admin/login/"
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', opener.open(login_url).read().decode())
    assert token is not None
    form = urllib.parse.urlencode(
        {"username": slug, "password": "pw-" + slug, "csrfmiddlewaretoken": token.group(1), "next": "/admin/"}
    ).encode()
    opener.open(urllib.request.Request(login_url, data=form, headers={"Referer": login_url}))

    with opener.open(f"{live_gateway.url}/admin/billing/usagerecord/export.csv?q={slug}", timeout=30) as response:
        assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
        rows = list(csv.reader(io.StringIO(response.read().decode())))

    assert rows[0] == USAGE_HEADER
    assert len(rows) == 2_501
    assert (rows[1][1], rows[1][21]) == (f"req_{slug}_02499", "0.000016299")
    assert (rows[-1][1], rows[-1][21]) == (f"req_{slug}_00000", "0.000013800")
