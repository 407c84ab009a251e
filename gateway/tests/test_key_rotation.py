"""One rotation for admin and the management API, and new keys shown only on the page, never in a cookie."""

import re
from decimal import Decimal
from typing import Any

import orjson
import pytest
from django.test import Client

from accounts.keys import key_digest
from accounts.models import ApiKey, AuditEntry, Tenant
from accounts.services import api_key_issue, tenant_create
from billing.models import Budget
from billing.services import budget_set

pytestmark = pytest.mark.django_db
KEY = re.compile(r"sk-gw-[A-Za-z0-9_\-]{20,}")


def _key_with_every_setting(tenant: Tenant) -> ApiKey:
    _, key = api_key_issue(
        tenant=tenant,
        name="ci",
        allowed_models=["gpt-*"],
        tags=["team-a"],
        cache_ttl_seconds=60,
        rpm_limit=5,
        tpm_limit=1000,
        max_parallel=2,
        trace_sample_rate=Decimal("0.25"),
    )
    budget_set(api_key=key, period="day", limit_usd=Decimal("2.5"))
    return key


SETTINGS = ("name", "allowed_models", "tags", "cache_ttl_seconds", "rpm_limit", "tpm_limit", "max_parallel")


def _settings(key: ApiKey) -> tuple[Any, ...]:
    return (*(getattr(key, name) for name in SETTINGS), key.trace_sample_rate)


def test_rotating_a_key_through_the_api_keeps_its_trace_sampling_rate_and_every_other_setting(
    admin_client: Client,
) -> None:
    old = _key_with_every_setting(tenant_create(slug="acme"))
    rotated = admin_client.post(f"/api/keys/{old.pk}/rotate", b"{}", content_type="application/json")
    assert rotated.status_code == 201
    new = ApiKey.objects.get(pk=orjson.loads(rotated.content)["id"])
    assert new.trace_sample_rate == Decimal("0.25")
    assert _settings(new) == _settings(old)
    assert [(b.period, b.limit_usd) for b in Budget.objects.filter(api_key=new)] == [("day", Decimal("2.5"))]
    actions = AuditEntry.objects.filter(actor="admin").order_by("id").values_list("action", "object_id")
    assert list(actions) == [
        ("key.create", str(new.pk)),
        ("key.rotate", str(new.pk)),
        ("budget.set", str(Budget.objects.get(api_key=new).pk)),
        ("key.revoke", str(old.pk)),
    ]


def test_rotating_in_admin_shows_the_new_key_on_the_page_keeps_its_settings_and_sets_no_cookie_with_it(
    admin_client: Client,
) -> None:
    old = _key_with_every_setting(tenant_create(slug="acme"))
    response = admin_client.post("/admin/accounts/apikey/", {"action": "rotate", "_selected_action": [old.pk]})
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    shown = KEY.findall(response.content.decode())
    assert len(shown) == 1
    new = ApiKey.objects.get(digest=key_digest(shown[0]))
    assert _settings(new) == _settings(old) and new.pk != old.pk
    old.refresh_from_db()
    assert old.is_revoked
    assert shown[0] not in str(response.cookies) and "messages" not in response.cookies
    listing = admin_client.get("/admin/accounts/apikey/")
    assert shown[0] not in listing.content.decode() and shown[0] not in str(listing.cookies)
    assert AuditEntry.objects.filter(action="key.rotate", actor="admin", object_id=str(new.pk)).exists()


def test_creating_a_key_in_admin_shows_it_on_the_response_page_and_no_set_cookie_header_carries_it(
    admin_client: Client,
) -> None:
    tenant = Tenant.objects.create(slug="adm")
    form = {"tenant": tenant.pk, "name": "from admin", "allowed_models": "null", "tags": "[]", "expires_at": ""}
    response = admin_client.post("/admin/accounts/apikey/add/", form)
    assert response.status_code == 200
    shown = KEY.findall(response.content.decode())
    assert len(shown) == 1
    key = ApiKey.objects.get(tenant=tenant)
    assert key.digest == key_digest(shown[0])
    set_cookies = [morsel.OutputString() for morsel in response.cookies.values()]
    assert not any(shown[0] in header for header in set_cookies), set_cookies
    assert "messages" not in response.cookies
    # nothing is left behind for the next page either
    following = admin_client.get("/admin/accounts/apikey/")
    assert shown[0] not in following.content.decode()
    assert not any(shown[0] in m.OutputString() for m in following.cookies.values())
    assert AuditEntry.objects.filter(action="key.create", actor="admin", object_id=str(key.pk)).exists()
