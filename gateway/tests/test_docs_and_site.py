"""Staff pages that must work on a machine without internet: the API docs load
their Swagger assets from the gateway itself, and admin's "View site" leads somewhere."""

import re
import urllib.request
from typing import Any

import pytest

from proxy.tests.live import LiveGateway

ASSET = re.compile(r"""(?:src|href)=["']([^"']+)["']""")


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read()


@pytest.mark.parametrize("docs", ["/v1/docs", "/api/docs"])
def test_the_api_docs_reference_no_other_host_and_every_asset_answers(live_gateway: LiveGateway, docs: str) -> None:
    status, page = get(live_gateway.url + docs)
    assert status == 200
    assets = ASSET.findall(page.decode())
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets), assets
    assert [a for a in assets if not a.startswith("/") or a.startswith("//")] == []  # no CDN, nothing external
    for asset in assets:
        status, body = get(live_gateway.url + asset)
        assert (asset, status, bool(body)) == (asset, 200, True)


@pytest.mark.parametrize("docs", ["/v1/docs", "/api/docs"])
def test_the_api_docs_fetch_no_validator_badge(live_gateway: LiveGateway, docs: str) -> None:
    # Swagger's default badge is an image from validator.swagger.io on any non-local host.
    page = get(live_gateway.url + docs)[1].decode()
    assert re.search(r'"validatorUrl":\s*null', page), page[-800:]


@pytest.mark.django_db
def test_admins_view_site_link_leads_to_the_dashboard_not_a_404(admin_client: Any) -> None:
    index = admin_client.get("/admin/").content.decode()
    [view_site] = re.findall(r'<a href="([^"]*)">View site</a>', index)
    assert view_site == "/admin/dashboard/"
    assert admin_client.get(view_site).status_code == 200
