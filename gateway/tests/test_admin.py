"""Staff manage keys and providers in admin without ever seeing a stored secret."""

import re
from typing import Any

import pytest

from accounts.keys import key_digest
from accounts.models import ApiKey, Tenant
from proxy.models import Provider
from proxy.secrets import secret_decrypt

pytestmark = pytest.mark.django_db


def test_adding_a_key_in_admin_shows_the_plaintext_once_and_stores_only_its_digest(admin_client: Any) -> None:
    tenant = Tenant.objects.create(slug="adm")
    response = admin_client.post(
        "/admin/accounts/apikey/add/",
        {"tenant": tenant.pk, "name": "from admin", "allowed_models": "", "tags": "team-a", "expires_at": ""},
        follow=True,
    )
    shown = re.findall(r"sk-gw-[A-Za-z0-9_\-]{20,}", response.content.decode())
    assert len(shown) == 1
    key = ApiKey.objects.get(tenant=tenant)
    assert (key.digest, key.prefix, key.tags) == (key_digest(shown[0]), shown[0][:12], ["team-a"])
    page = admin_client.get(f"/admin/accounts/apikey/{key.pk}/change/").content.decode()
    assert shown[0] not in page and key.digest not in page


def test_the_revoke_action_revokes_keys(admin_client: Any) -> None:
    from accounts.services import api_key_issue

    _, key = api_key_issue(tenant=Tenant.objects.create(slug="rev"))
    admin_client.post("/admin/accounts/apikey/", {"action": "revoke", "_selected_action": [key.pk]})
    key.refresh_from_db()
    assert key.is_revoked


def test_a_provider_credential_set_in_admin_is_encrypted_and_never_shown_back(admin_client: Any) -> None:
    admin_client.post(
        "/admin/proxy/provider/add/",
        {
            "name": "adm-prov",
            "kind": "openai",
            "base_url": "https://adm.test/v1",
            "api_key": "sk-admin-secret-1",
            "api_key_env": "",
            "is_active": "on",
        },
    )
    provider = Provider.objects.get(name="adm-prov")
    assert secret_decrypt(provider.api_key_encrypted) == "sk-admin-secret-1"
    listing = admin_client.get("/admin/proxy/provider/").content.decode()
    change = admin_client.get(f"/admin/proxy/provider/{provider.pk}/change/").content.decode()
    assert "stored (encrypted)" in listing
    for page in (listing, change):
        assert "sk-admin-secret-1" not in page and provider.api_key_encrypted not in page


def test_the_usage_ledger_is_read_only_in_admin(admin_client: Any) -> None:
    assert admin_client.get("/admin/billing/usagerecord/").status_code == 200
    assert admin_client.get("/admin/billing/usagerecord/add/").status_code == 403
