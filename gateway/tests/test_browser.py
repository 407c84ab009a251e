"""A staff member's afternoon, in a real headless Chromium against the gateway under daphne:
log in, add a tenant and a key (seen once), send a request with it, then find it in the usage
list, on the dashboard's spend chart and in the live feed.

Needs the Debian `chromium` package and the `playwright` Python package (its bundled driver,
never `playwright install`). Screenshots go to var/test-artifacts/.
"""

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from django.conf import settings

from conftest import Ledger
from proxy.tests.live import LiveGateway

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
KEY_IN_PAGE = re.compile(r"sk-gw-[A-Za-z0-9_\-]{20,}")
TIMEOUT_MS = 15_000

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="no browser: apt-get install -y chromium")


@pytest.fixture
def artifacts() -> Path:
    folder = settings.VAR_DIR / "test-artifacts"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def staff_login(django_db_blocker: Any) -> tuple[str, str]:
    """A superuser committed to the test database, which the daphne subprocess reads."""
    from django.contrib.auth import get_user_model

    username, password = f"staff-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    with django_db_blocker.unblock():
        get_user_model().objects.create_superuser(username, f"{username}@example.test", password)
    return username, password


@pytest.fixture
def browser(monkeypatch: Any) -> Iterator[Any]:
    # Playwright's sync API drives its own event loop in this thread, which
    # Django's ORM guard takes for async code; the test's ORM calls are plain sync.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


def test_staff_add_a_key_see_it_once_and_watch_its_first_request_everywhere(
    live_gateway: LiveGateway,
    ledger: Ledger,
    staff_login: tuple[str, str],
    browser: Any,
    django_db_blocker: Any,
    artifacts: Path,
) -> None:
    base, slug = live_gateway.url, f"browser-{uuid.uuid4().hex[:8]}"
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    admin = context.new_page()

    # Log in, add a tenant and a key for it.
    admin.goto(base + "/admin/login/?next=/admin/")
    admin.fill("#id_username", staff_login[0])
    admin.fill("#id_password", staff_login[1])
    admin.click("input[type=submit]")
    admin.wait_for_selector('a[href="/admin/dashboard/"]')
    admin.goto(base + "/admin/accounts/tenant/add/")
    admin.fill("#id_slug", slug)
    admin.click("input[name=_save]")
    admin.wait_for_selector(f"text={slug}")
    admin.goto(base + "/admin/accounts/apikey/add/")
    admin.select_option("#id_tenant", label=slug)
    admin.fill("#id_name", "from the browser")
    admin.click("input[name=_save]")
    shown = KEY_IN_PAGE.findall(admin.inner_text(".issued-key"))  # on the answer page, in no message
    assert len(shown) == 1
    plaintext = shown[0]
    admin.screenshot(path=str(artifacts / "1-key-shown-once.png"), full_page=True)
    admin.goto(base + "/admin/accounts/apikey/")
    assert plaintext not in admin.content()  # never again
    assert not [c["name"] for c in context.cookies() if plaintext in c["value"]]

    # Open the dashboard first, so its live feed is listening when the request goes through.
    dashboard = context.new_page()
    dashboard.goto(base + "/admin/dashboard/")
    dashboard.wait_for_selector("#live-feed-state.live")

    client = openai.OpenAI(base_url=base + "/v1", api_key=plaintext, max_retries=0, timeout=20)
    answer = client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hello"}])
    assert answer.choices[0].finish_reason == "stop"

    row = dashboard.wait_for_selector(f"#live-feed tbody tr:has-text('{slug}')")
    assert row.inner_text().split("\t")[1:5] == [slug, plaintext[:12], "gpt-test", "200"]
    dashboard.screenshot(path=str(artifacts / "2-live-feed.png"), full_page=True)

    # The usage list has the record the meter wrote.
    from accounts.keys import key_digest
    from accounts.models import ApiKey

    with django_db_blocker.unblock():
        key_id = ApiKey.objects.get(digest=key_digest(plaintext)).pk
    [record] = ledger.wait(key_id, 1)
    admin.goto(base + f"/admin/billing/usagerecord/?tenant={slug}")
    listed = admin.wait_for_selector(f"#result_list tbody tr:has(a[href*='/usagerecord/{record.pk}/change/'])")
    assert [slug, plaintext[:12], "gpt-test", "200"] == listed.inner_text().split("\t")[2:6]
    admin.screenshot(path=str(artifacts / "3-usage-list.png"), full_page=True)

    # Once rolled up, the dashboard's spend chart has a bar for the tenant
    # (shown alone: other tests' tenants may outspend it into "other").
    from billing.rollups import usage_rollup

    with django_db_blocker.unblock():
        usage_rollup()
    dashboard.goto(base + f"/admin/dashboard/?tenant={slug}")
    bar = dashboard.wait_for_selector(f'[data-chart="spend_by_tenant"] rect[data-tip*=" · {slug}: "]')
    assert bar.get_attribute("data-tip").startswith(f"{record.created_at:%m-%d} · {slug}: $")
    assert dashboard.locator(f'[data-legend="spend_by_tenant"] >> text={slug}').count() == 1
    dashboard.screenshot(path=str(artifacts / "4-dashboard.png"), full_page=True)
    context.close()


@pytest.fixture(scope="module")
def uvicorn_gateway(gateway_config: None) -> Iterator[LiveGateway]:
    """The production server (serve's uvicorn command line), whose WebSockets need a pinned library."""
    gateway = LiveGateway(server="uvicorn").start()
    yield gateway
    gateway.terminate()


def test_under_uvicorn_the_dashboards_live_feed_connects_and_shows_a_request(
    uvicorn_gateway: LiveGateway, staff_login: tuple[str, str], browser: Any, key: Any, artifacts: Path
) -> None:
    base = uvicorn_gateway.url
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(base + "/admin/login/?next=/admin/dashboard/")
    page.fill("#id_username", staff_login[0])
    page.fill("#id_password", staff_login[1])
    page.click("input[type=submit]")
    page.wait_for_selector("#live-feed-state.live")
    assert page.inner_text("#live-feed-state") == "live"

    client = openai.OpenAI(base_url=base + "/v1", api_key=key.plaintext, max_retries=0, timeout=20)
    client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hello"}])

    row = page.wait_for_selector(f"#live-feed tbody tr:has-text('{key.plaintext[:12]}')")
    assert row.inner_text().split("\t")[2:5] == [key.plaintext[:12], "gpt-test", "200"]
    page.screenshot(path=str(artifacts / "uvicorn-live-feed.png"), full_page=True)
    context.close()


def test_a_tenants_dashboard_listens_to_that_tenants_feed_only(
    uvicorn_gateway: LiveGateway, staff_login: tuple[str, str], browser: Any, issue_key: Any, django_db_blocker: Any
) -> None:
    from accounts.models import Tenant

    watched, other = issue_key(), issue_key()
    with django_db_blocker.unblock():
        slug = Tenant.objects.get(pk=watched.tenant_id).slug
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    sockets: list[str] = []
    page.on("websocket", lambda socket: sockets.append(socket.url))
    page.goto(uvicorn_gateway.url + f"/admin/login/?next=/admin/dashboard/%3Ftenant%3D{slug}")
    page.fill("#id_username", staff_login[0])
    page.fill("#id_password", staff_login[1])
    page.click("input[type=submit]")
    page.wait_for_selector("#live-feed-state.live")
    assert sockets and all(url.endswith(f"/ws/live/?tenant={slug}") for url in sockets)

    for key in (other, watched):  # the other tenant's request first: it must never show
        client = openai.OpenAI(base_url=uvicorn_gateway.url + "/v1", api_key=key.plaintext, max_retries=0, timeout=20)
        client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hello"}])
    page.wait_for_selector(f"#live-feed tbody tr:has-text('{watched.plaintext[:12]}')")
    assert page.query_selector(f"#live-feed tbody tr:has-text('{other.plaintext[:12]}')") is None
    context.close()


@pytest.mark.parametrize(("docs", "title"), [("/v1/docs", "LLM Gateway"), ("/api/docs", "LLM Gateway management API")])
def test_the_api_docs_render_in_a_browser_with_no_internet(
    live_gateway: LiveGateway, browser: Any, artifacts: Path, docs: str, title: str
) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    elsewhere: list[str] = []

    def offline(route: Any) -> None:
        url = route.request.url
        if url.startswith(live_gateway.url + "/"):
            route.continue_()
        else:
            elsewhere.append(url)
            route.abort("internetdisconnected")

    context.route("**/*", offline)
    page = context.new_page()
    page.goto(live_gateway.url + docs)
    heading = page.wait_for_selector(".swagger-ui .info .title")
    assert heading.inner_text().startswith(title)
    page.wait_for_selector(".swagger-ui .opblock")  # the operations, from the schema
    page.screenshot(path=str(artifacts / f"docs-{docs.strip('/').replace('/', '-')}.png"), full_page=True)
    assert elsewhere == []
    context.close()
