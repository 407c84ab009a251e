"""The request explorer and the key form's model picker, in a real headless
Chromium against the gateway under daphne: pick models for a key, follow a
dashboard bar and a live-feed row to their usage records and a record to
its trace, and choose a tenant on the dashboard (an unknown one shows nothing).

Reuses test_browser's launch (Debian's chromium, Playwright's bundled driver)
and keeps screenshots in var/test-artifacts/ as it does.
"""

import datetime as dt
import time
import urllib.parse
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from conftest import IssuedKey, Ledger
from gateway.tests.test_browser import CHROMIUM, TIMEOUT_MS, artifacts, browser, staff_login  # noqa: F401  (fixtures)
from proxy.tests.live import LiveGateway

pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="no browser: apt-get install -y chromium")


def signed_in(chromium: Any, base: str, login: tuple[str, str], width: int = 1400) -> Any:
    context = chromium.new_context(viewport={"width": width, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(base + "/admin/login/?next=/admin/")
    page.fill("#id_username", login[0])
    page.fill("#id_password", login[1])
    page.click("input[type=submit]")
    page.wait_for_selector('a[href="/admin/dashboard/"]')
    return page


def query_of(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


def test_a_keys_models_are_picked_from_the_catalog_or_typed_and_saved_as_a_list(
    live_gateway: LiveGateway,
    staff_login: tuple[str, str],  # noqa: F811
    browser: Any,  # noqa: F811
    django_db_blocker: Any,
    artifacts: Path,  # noqa: F811
) -> None:
    from accounts.models import ApiKey
    from accounts.services import tenant_create

    slug = f"picker-{uuid.uuid4().hex[:8]}"
    with django_db_blocker.unblock():
        tenant_create(slug=slug)
    page = signed_in(browser, live_gateway.url, staff_login)
    page.goto(live_gateway.url + "/admin/accounts/apikey/add/")
    page.select_option("#id_tenant", label=slug)
    page.fill("#id_name", "picked")

    search = page.locator("#id_allowed_models-search")
    search.fill("fake-gpt")  # not in the catalog: typed freely
    search.press("Enter")
    search.fill("fake/")
    page.click('#id_allowed_models-options [data-name="fake/*"]')  # the wildcard route, from the catalog
    chips = page.locator(".model-picker-chip")
    assert chips.evaluate_all("chips => chips.map(c => c.dataset.name)") == ["fake-gpt", "fake/*"]
    page.fill("#id_tags", "team-a, nightly")
    page.screenshot(path=str(artifacts / "key-form-model-picker.png"), full_page=True)
    page.click("input[name=_save]")
    page.wait_for_selector(".issued-key")

    with django_db_blocker.unblock():
        key = ApiKey.objects.get(tenant__slug=slug)
    assert (key.allowed_models, key.tags) == (["fake-gpt", "fake/*"], ["team-a", "nightly"])
    page.goto(live_gateway.url + f"/admin/accounts/apikey/{key.pk}/change/")
    shown = page.locator(".model-picker-chip").evaluate_all("chips => chips.map(c => c.dataset.name)")
    assert shown == ["fake-gpt", "fake/*"]
    page.context.close()


def test_staff_follow_a_chart_bar_and_a_live_row_to_the_records_and_a_record_to_its_trace(
    live_gateway: LiveGateway,
    ledger: Ledger,
    issue_key: Callable[..., IssuedKey],
    staff_login: tuple[str, str],  # noqa: F811
    browser: Any,  # noqa: F811
    django_db_blocker: Any,
    artifacts: Path,  # noqa: F811
) -> None:
    from accounts.models import Tenant
    from billing.rollups import usage_rollup

    key, other = issue_key(trace_sample_rate=1), issue_key()
    with django_db_blocker.unblock():
        slug = Tenant.objects.get(pk=key.tenant_id).slug
    base = live_gateway.url
    dashboard = signed_in(browser, base, staff_login, width=1600)  # a laptop's width
    dashboard.goto(base + f"/admin/dashboard/?tenant={slug}")
    dashboard.wait_for_selector("#live-feed-state.live")

    question = f"What is {uuid.uuid4().hex[:6]}?"
    for issued in (other, key):  # another tenant's request too: it must show nowhere below
        client = openai.OpenAI(base_url=base + "/v1", api_key=issued.plaintext, max_retries=0, timeout=20)
        answer = client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": question}])
    [record] = ledger.wait(key.key_id, 1)
    ledger.wait(other.key_id, 1)

    # A live row's time leads to that request's record.
    dashboard.click(f"#live-feed tbody tr[data-request-id='{record.request_id}'] td:first-child a")
    dashboard.wait_for_selector("#result_list")
    assert query_of(dashboard.url) == {"q": record.request_id, "tenant": slug}
    assert dashboard.locator("#result_list tbody tr").count() == 1

    # Once rolled up, the tenant's spend bar leads to its records of that day.
    with django_db_blocker.unblock():
        usage_rollup()
    dashboard.goto(base + f"/admin/dashboard/?tenant={slug}")
    bar = dashboard.wait_for_selector(f'[data-chart="spend_by_tenant"] a rect[data-tip*=" · {slug}: "]')
    dashboard.screenshot(path=str(artifacts / "explorer-1-dashboard.png"), full_page=True)
    bar.click()
    dashboard.wait_for_selector("#result_list")
    filters = query_of(dashboard.url)
    assert filters["tenant"] == slug
    assert filters["since"].startswith(f"{record.created_at:%Y-%m-%d}T00:00:00")
    rows = dashboard.locator("#result_list tbody tr")
    assert rows.count() == 1 and key.plaintext[:12] in rows.inner_text()
    assert dashboard.input_value("#usage-explorer #id_tenant") == slug
    # Every column shows beside both sidebars: nothing cut off or scrolled away.
    assert dashboard.evaluate(
        "document.querySelector('#result_list').scrollWidth <= document.querySelector('.results').clientWidth"
    )
    dashboard.screenshot(path=str(artifacts / "explorer-2-filtered-usage.png"), full_page=True)

    # A bar of the requests chart: that hour's succeeded requests of the tenant.
    dashboard.go_back()
    dashboard.click('[data-chart="requests"] a rect[data-tip*="succeeded"]')
    dashboard.wait_for_selector("#result_list")
    hourly = query_of(dashboard.url)
    assert (hourly["status"], hourly["tenant"]) == ("ok", slug)
    since, until = (dt.datetime.fromisoformat(hourly[name].replace("Z", "+00:00")) for name in ("since", "until"))
    assert until - since == dt.timedelta(hours=1) and since <= record.created_at < until
    rows = dashboard.locator("#result_list tbody tr")
    assert rows.count() == 1

    # The record, to the millisecond, and its trace: prompt and answer side by side.
    rows.locator("th a, td a").first.click()
    dashboard.wait_for_selector("#usage-trace-link")
    assert f"{record.created_at:%Y-%m-%d %H:%M:%S}." in dashboard.inner_text("#content-main")
    trace_url = dashboard.get_attribute("#usage-trace-link", "href")
    deadline = time.monotonic() + 10  # the trace writer is a thread of the gateway, off the request path
    dashboard.click("#usage-trace-link")
    while dashboard.query_selector("#trace-prompt") is None and time.monotonic() < deadline:
        dashboard.goto(base + trace_url)
    assert question in dashboard.inner_text("#trace-prompt")
    assert answer.choices[0].message.content in dashboard.inner_text("#trace-answer")
    prompt_box, answer_box = (
        dashboard.locator("#trace-prompt").bounding_box(),
        dashboard.locator("#trace-answer").bounding_box(),
    )
    assert prompt_box["x"] + prompt_box["width"] <= answer_box["x"] and abs(prompt_box["y"] - answer_box["y"]) < 2
    dashboard.screenshot(path=str(artifacts / "explorer-3-trace.png"), full_page=True)
    dashboard.context.close()


def test_the_dashboards_tenant_picker_shows_one_tenant_and_an_unknown_one_shows_nothing(
    live_gateway: LiveGateway,
    issue_key: Callable[..., IssuedKey],
    staff_login: tuple[str, str],  # noqa: F811
    browser: Any,  # noqa: F811
    django_db_blocker: Any,
    artifacts: Path,  # noqa: F811
) -> None:
    from accounts.models import Tenant

    key = issue_key()
    with django_db_blocker.unblock():
        slug = Tenant.objects.get(pk=key.tenant_id).slug
    page = signed_in(browser, live_gateway.url, staff_login)
    fetched: list[str] = []
    page.on("request", lambda request: fetched.append(request.url))
    response = page.goto(live_gateway.url + "/admin/dashboard/?days=30&tenant=no-such-tenant")
    assert response is not None and response.status == 404
    assert "Unknown tenant “no-such-tenant”" in page.inner_text("#unknown-tenant")
    assert page.query_selector(".ops-chart") is None and page.query_selector("#live-feed") is None
    page.screenshot(path=str(artifacts / "dashboard-unknown-tenant.png"), full_page=True)
    assert not [url for url in fetched if "data.json" in url or "/ws/" in url]  # no one's numbers were asked for

    page.fill("#tenant-picker-input", slug)
    page.click("#tenant-picker input[type=submit]")
    page.wait_for_selector(f'#content-main[data-tenant="{slug}"][data-drawn]')
    assert query_of(page.url) == {"days": "30", "tenant": slug}
    assert page.input_value("#tenant-picker-input") == slug
    page.screenshot(path=str(artifacts / "dashboard-tenant-picked.png"), full_page=True)
    page.context.close()
