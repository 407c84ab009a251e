"""The request explorer in the admin, read as staff read it: the usage list's
columns and filters, a record's trace with prompt and answer side by side,
the dashboard's tenant picker, and the permissions that keep usage from
staff who may not see it."""

import datetime as dt
import re
import uuid
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
from django.contrib.auth.models import Permission
from django.http import StreamingHttpResponse
from django.test import Client

from accounts.models import ApiKey, RequestTrace
from accounts.services import api_key_issue, tenant_create
from billing.models import UsageRecord
from gateway.trace_text import Turn, answer_text, prompt_turns

pytestmark = pytest.mark.django_db

AT = dt.datetime(2025, 3, 4, 10, 30, 15, 123456, tzinfo=dt.UTC)
USAGE = "/admin/billing/usagerecord/"
CHAT = {
    "model": "gpt-test",
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
}
ANSWER = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there."}}]}


def new_key(slug: str) -> ApiKey:
    return api_key_issue(tenant=tenant_create(slug=slug), name="backend")[1]


def record(key: ApiKey, **fields: Any) -> UsageRecord:
    values: dict[str, Any] = {
        "request_id": f"req_{uuid.uuid4().hex}",
        "created_at": AT,
        "tenant_id": key.tenant_id,
        "api_key": key,
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
    return UsageRecord.objects.create(**values)


def listed(client: Client, query: str = "") -> list[str]:
    """The request ids of the rows the usage list shows, by their detail links."""
    page = client.get(USAGE + query)
    assert page.status_code == 200, page.status_code
    ids = re.findall(r'href="/admin/billing/usagerecord/(\d+)/change/[^"]*"', page.content.decode())
    return sorted(UsageRecord.objects.filter(pk__in=ids).values_list("request_id", flat=True))


def staff(django_user_model: Any, *codenames: str) -> Client:
    user = django_user_model.objects.create_user(f"staff-{uuid.uuid4().hex[:6]}", password="x", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


# --- The usage list --------------------------------------------------------------------------


def test_the_usage_list_shows_the_columns_staff_read_with_times_to_the_second(admin_client: Client) -> None:
    row = record(new_key("acme"), cache_status="miss", cached_input_tokens=3, reasoning_tokens=2)
    page = admin_client.get(USAGE).content.decode()
    headers = re.findall(r'<th scope="col"\s+class="[^"]*column-(\w+)', page)
    assert headers == ["time", "tenant", "key", "asked_model", "status", "tokens", "cost", "latency", "cache"]
    assert "2025-03-04 10:30:15" in page
    assert '<td class="field-asked_model">gpt-test</td>' in page
    assert ">15 / 22<" in page and ">0.000013800<" in page and ">40 ms<" in page and ">miss<" in page
    assert row.api_key.prefix in page


def test_a_records_page_shows_its_time_to_the_millisecond(admin_client: Client) -> None:
    row = record(new_key("acme"))
    page = admin_client.get(f"{USAGE}{row.pk}/change/").content.decode()
    assert "2025-03-04 10:30:15.123+00:00" in page


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("?status=5xx", ["broken"]),
        ("?status=failed", ["broken", "limited"]),
        ("?status=429", ["limited"]),
        ("?status=ok", ["cheap", "dear", "other", "slow"]),
        ("?tenant=acme", ["broken", "cheap", "dear", "limited", "slow"]),
        ("?model=gpt-big", ["dear"]),
        ("?cost_min=0.001", ["dear"]),
        ("?cost_min=0.000000001&cost_max=0.0000138", ["cheap", "other", "slow"]),
        ("?latency_min=1000", ["slow"]),
        ("?latency_max=40&status=ok&tenant=acme", ["cheap", "dear"]),
        ("?since=2025-03-04T10:00:00%2B00:00&until=2025-03-04T11:00:00Z", ["cheap", "dear", "limited", "other"]),
    ],
)
def test_the_usage_list_filters_by_status_tenant_model_cost_latency_and_time(
    admin_client: Client, query: str, expected: list[str]
) -> None:
    acme, other = new_key("acme"), new_key("other")
    record(acme, request_id="cheap")
    record(acme, request_id="dear", public_model="gpt-big", cost_nanos=5_000_000)
    record(acme, request_id="limited", status_code=429, cost_nanos=0)
    record(acme, request_id="broken", status_code=502, cost_nanos=0, created_at=AT - dt.timedelta(hours=2))
    record(acme, request_id="slow", latency_ms=4_000, created_at=AT + dt.timedelta(hours=1))
    record(other, request_id="other")
    assert listed(admin_client, query) == expected


def test_the_key_filter_takes_a_prefix(admin_client: Client) -> None:
    mine, theirs = new_key("acme"), new_key("other")
    record(mine, request_id="mine")
    record(theirs, request_id="theirs")
    assert listed(admin_client, f"?key={mine.prefix}") == ["mine"]


@pytest.mark.parametrize("query", ["?tenant=nobody", "?key=sk-gw-nope", "?cost_min=cheap", "?status=teapot"])
def test_an_unknown_or_unreadable_filter_shows_no_rows_and_says_why(admin_client: Client, query: str) -> None:
    record(new_key("acme"))
    page = admin_client.get(USAGE + query).content.decode()
    assert listed(admin_client, query) == []
    assert 'id="usage-explorer-errors"' in page


def test_a_tenants_filtered_list_never_shows_another_tenants_rows_whatever_else_is_asked(admin_client: Client) -> None:
    acme, other = new_key("acme"), new_key("other")
    record(acme, request_id="acme-1")
    theirs = record(other, request_id="other-1")
    assert listed(admin_client, "?tenant=acme") == ["acme-1"]
    assert listed(admin_client, f"?tenant=acme&key={other.prefix}") == []
    assert listed(admin_client, f"?tenant=acme&q={theirs.request_id}") == []


def test_the_explorer_form_keeps_the_lists_other_parameters(admin_client: Client) -> None:
    record(new_key("acme"))
    page = admin_client.get(USAGE + "?q=acme&provider=fake&tenant=acme").content.decode()
    form = page.split('id="usage-explorer"')[1].split("</form>")[0]
    assert '<input type="hidden" name="q" value="acme">' in form
    assert '<input type="hidden" name="provider" value="fake">' in form
    assert 'name="tenant" id="id_tenant" value="acme"' in form


def test_the_csv_export_carries_the_explorers_filters(admin_client: Client) -> None:
    record(new_key("acme"), request_id="mine", status_code=502)
    record(new_key("other"), request_id="theirs", status_code=502)
    page = admin_client.get(USAGE + "?tenant=acme&status=5xx").content.decode()
    link = re.search(r'href="([^"]*export\.csv[^"]*)"', page)
    assert link is not None
    export = admin_client.get(link.group(1).replace("&amp;", "&"))
    lines = b"".join(cast(StreamingHttpResponse, export).streaming_content).decode().splitlines()
    assert [line.split(",")[1] for line in lines[1:]] == ["mine"]


def test_staff_without_the_usage_view_permission_see_nothing_of_it(django_user_model: Any) -> None:
    row = record(new_key("acme"))
    client = staff(django_user_model, "view_tenant", "view_requesttrace")
    assert client.get(USAGE).status_code == 403
    assert client.get(USAGE + "?tenant=acme").status_code == 403
    assert client.get(f"{USAGE}{row.pk}/change/").status_code == 403
    assert client.get(f"/admin/explorer/trace/{row.request_id}/").status_code == 403
    assert client.get("/admin/dashboard/").status_code == 403
    assert client.get("/admin/dashboard/data.json").status_code == 403


def test_staff_who_may_read_rollups_but_not_records_get_a_dashboard_without_links(django_user_model: Any) -> None:
    client = staff(django_user_model, "view_usagerollup")
    dashboard = client.get("/admin/dashboard/")
    assert dashboard.status_code == 200
    assert 'data-usage-url=""' in dashboard.content.decode()  # no bar or feed row links to records


def test_other_admin_lists_filter_by_tenant_and_refuse_an_unknown_one(admin_client: Client) -> None:
    acme, other = new_key("acme"), new_key("other")
    page = admin_client.get("/admin/accounts/apikey/?tenant=acme").content.decode()
    assert acme.prefix in page and other.prefix not in page
    unknown = admin_client.get("/admin/accounts/apikey/?tenant=nobody").content.decode()
    assert "Unknown tenant “nobody”" in unknown and acme.prefix not in unknown
    for changelist in ("/admin/billing/usagerollup/", "/admin/billing/budget/", "/admin/billing/creditentry/"):
        assert 'datalist id="tenant-filter-choices"' in admin_client.get(changelist + "?tenant=acme").content.decode()


# --- From a record to its trace --------------------------------------------------------------------


def test_a_record_links_to_its_trace_with_prompt_and_answer_side_by_side(admin_client: Client) -> None:
    row = record(new_key("acme"))
    RequestTrace.objects.create(
        request_id=row.request_id,
        tenant_id=row.tenant_id,
        key_id=row.api_key_id,
        key_prefix=row.api_key.prefix,
        model="gpt-test",
        endpoint="chat.completions",
        status=200,
        started_at=AT,
        finished_at=AT,
        latency_ms=40,
        request=CHAT,
        response=ANSWER,
    )
    detail = admin_client.get(f"{USAGE}{row.pk}/change/").content.decode()
    link = re.search(r'<a href="([^"]+)" id="usage-trace-link">', detail)
    assert link is not None and link.group(1) == f"/admin/explorer/trace/{row.request_id}/"

    trace_page = admin_client.get(f"/admin/accounts/requesttrace/{RequestTrace.objects.get().pk}/change/")
    assert f'<a href="{link.group(1)}">Prompt and answer, side by side</a>' in trace_page.content.decode()

    page = admin_client.get(link.group(1)).content.decode()
    prompt = page.split('id="trace-prompt"')[1].split("</section>")[0]
    answer = page.split('id="trace-answer"')[1].split("</section>")[0]
    assert "Be brief." in prompt and "hi" in prompt and "Hello there." not in prompt
    assert "Hello there." in answer
    assert "0.000013800" in page and "2025-03-04 10:30:15.123" in page


def test_an_augmented_requests_trace_lists_its_steps_and_the_text_added_under_the_prompt(admin_client: Client) -> None:
    row = record(new_key("acme"))
    steps = [
        {"step": "designator", "decision": "scrape", "query": "", "urls": ["https://example.org/a"]},
        {"step": "scrape", "url": "https://example.org/a", "error": "HTTP 404"},
        {"step": "search", "provider": "searxng", "query": "gateways", "results": 2},
        {"step": "context", "added": 31, "truncated": False, "text": "Context found on the web: <b>x</b>"},
    ]
    RequestTrace.objects.create(
        request_id=row.request_id,
        tenant_id=row.tenant_id,
        key_id=row.api_key_id,
        key_prefix=row.api_key.prefix,
        model="gpt-test",
        endpoint="chat.completions",
        status=200,
        started_at=AT,
        finished_at=AT,
        latency_ms=40,
        request=CHAT,
        response=ANSWER,
        augmentation=steps,
    )

    page = admin_client.get(f"/admin/explorer/trace/{row.request_id}/").content.decode()

    prompt = page.split('id="trace-prompt"')[1].split("</section>")[0]
    listed = prompt.split('id="trace-augmentation"')[1]
    items = re.findall(r"<li><strong>(\w+)</strong>", listed)
    assert items == ["designator", "scrape", "search", "context"]
    assert "url: https://example.org/a, error: HTTP 404" in listed
    assert '<pre class="trace-text">Context found on the web: &lt;b&gt;x&lt;/b&gt;</pre>' in listed  # escaped
    assert prompt.index("Be brief.") < prompt.index('id="trace-augmentation"')  # under the client's prompt


def test_a_plain_requests_trace_lists_no_augmentation(admin_client: Client) -> None:
    row = record(new_key("acme"))
    RequestTrace.objects.create(
        request_id=row.request_id,
        tenant_id=row.tenant_id,
        key_id=row.api_key_id,
        key_prefix=row.api_key.prefix,
        model="gpt-test",
        endpoint="chat.completions",
        status=200,
        started_at=AT,
        finished_at=AT,
        latency_ms=40,
        request=CHAT,
        response=ANSWER,
    )
    page = admin_client.get(f"/admin/explorer/trace/{row.request_id}/").content.decode()
    assert 'id="trace-prompt"' in page and 'id="trace-augmentation"' not in page


def test_a_trace_in_the_day_files_is_found_too(admin_client: Client, settings: Any, tmp_path: Path) -> None:
    settings.TRACE_DIR = tmp_path
    row = record(new_key("acme"), stream=True)
    events = [
        'data: {"choices":[{"delta":{"content":"Hel"}}]}\n\n',
        'data: {"choices":[{"delta":{"content":"lo"}}]}\n\n',
    ]
    lines = [
        {"request_id": "req_other", "request": {"prompt": "no"}, "response": "no"},
        {"request_id": row.request_id, "stream": True, "request": CHAT, "response": events},
    ]
    (tmp_path / "traces-2025-03-04.jsonl").write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    page = admin_client.get(f"/admin/explorer/trace/{row.request_id}/").content.decode()
    assert '<pre class="trace-text">Hello</pre>' in page and "Answer (streamed)" in page


def test_an_untraced_record_says_how_to_trace_and_an_unknown_id_is_a_404(admin_client: Client) -> None:
    row = record(new_key("acme"))
    assert 'id="trace-missing"' in admin_client.get(f"/admin/explorer/trace/{row.request_id}/").content.decode()
    assert admin_client.get("/admin/explorer/trace/req_nothing/").status_code == 404


def test_staff_who_may_read_usage_but_not_traces_get_no_trace(django_user_model: Any) -> None:
    row = record(new_key("acme"))
    client = staff(django_user_model, "view_usagerecord")
    assert client.get(f"{USAGE}{row.pk}/change/").status_code == 200
    assert 'id="usage-trace-link"' not in client.get(f"{USAGE}{row.pk}/change/").content.decode()
    assert client.get(f"/admin/explorer/trace/{row.request_id}/").status_code == 403


def test_prompts_and_answers_are_read_from_every_client_api() -> None:
    messages = {"system": [{"type": "text", "text": "sys"}], "messages": [{"role": "user", "content": "q"}]}
    assert prompt_turns(messages) == [Turn("system", "sys"), Turn("user", "q")]
    assert prompt_turns({"instructions": "be kind", "input": "hello"}) == [
        Turn("system", "be kind"),
        Turn("user", "hello"),
    ]
    assert prompt_turns({"prompt": "complete me"}) == [Turn("user", "complete me")]
    assert answer_text({"content": [{"type": "text", "text": "A"}]}) == "A"
    assert answer_text({"output": [{"type": "message", "content": [{"type": "output_text", "text": "R"}]}]}) == "R"
    assert answer_text({"choices": [{"text": "C"}]}) == "C"
    assert answer_text({"error": {"message": "nope"}}) == "error: nope"
    stream = [
        'event: content_block_delta\ndata: {"type":"content_block_delta","delta":{"type":"text_delta","text":"Hi"}}\n\n',
        'data: {"type":"response.output_text.delta","delta":"!"}\n\n',
        "data: [DONE]\n\n",
    ]
    assert answer_text(stream) == "Hi!"


# --- The dashboard ---------------------------------------------------------------------------------


def test_an_unknown_tenant_on_the_dashboard_is_said_and_shows_no_ones_numbers(admin_client: Client) -> None:
    tenant_create(slug="acme")
    page = admin_client.get("/admin/dashboard/?tenant=nobody")
    body = page.content.decode()
    assert page.status_code == 404
    assert "Unknown tenant “nobody”" in body
    assert "ops-chart" not in body and "dashboard.js" not in body and "live-feed" not in body
    data = admin_client.get("/admin/dashboard/data.json?tenant=nobody")
    assert (data.status_code, data.json()["code"]) == (404, "unknown_tenant")


def test_the_dashboard_has_a_tenant_picker_that_keeps_the_period(admin_client: Client) -> None:
    for slug in ("acme", "globex"):
        tenant_create(slug=slug)
    page = admin_client.get("/admin/dashboard/?days=30&tenant=acme").content.decode()
    picker = page.split('id="tenant-picker"')[1].split("</form>")[0]
    assert '<input type="hidden" name="days" value="30">' in picker
    assert 'name="tenant"' in picker and 'value="acme"' in picker
    assert '<option value="acme">' in picker and '<option value="globex">' in picker
    assert f'data-usage-url="{USAGE}"' in page and 'data-tenant="acme"' in page


@pytest.mark.django_db(transaction=True)
async def test_the_live_feed_refuses_staff_who_may_not_view_usage(django_user_model: Any) -> None:
    from channels.db import database_sync_to_async

    from gateway import livefeed
    from gateway.tests.test_livefeed import connect

    user = await database_sync_to_async(django_user_model.objects.create_user)("ops", password="x", is_staff=True)
    communicator = await connect(user)
    connected, code = await communicator.connect()
    assert (connected, code) == (False, livefeed.CLOSE_FORBIDDEN)
