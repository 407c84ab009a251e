"""The management API asks for the model permissions admin asks for, and audits where providers send credentials."""

from typing import Any

import orjson
import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from accounts.models import AuditEntry
from accounts.services import tenant_create
from accounts.staff_tokens import staff_token_issue
from gateway.manage_api import api
from proxy.models import Provider
from proxy.services import provider_upsert

pytestmark = pytest.mark.django_db
JSON = "application/json"


@pytest.fixture
def staff(django_user_model: Any) -> Any:
    """Staff with no permissions at all: admin shows them nothing."""
    return django_user_model.objects.create_user("ops", password="pw-not-used-123", is_staff=True)


@pytest.fixture
def bearer(staff: Any) -> dict[str, str]:
    plaintext, _ = staff_token_issue(user=staff, name="ci")
    return {"HTTP_AUTHORIZATION": f"Bearer {plaintext}"}


def grant(user: Any, *codenames: str) -> None:
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))


def code(response: Any) -> tuple[int, str | None]:
    error = orjson.loads(response.content).get("error") if response.content.startswith(b"{") else None
    return response.status_code, error["code"] if isinstance(error, dict) else None


def test_staff_without_permissions_cannot_list_tenants_create_a_provider_or_move_its_base_url(
    client: Client, bearer: dict[str, str]
) -> None:
    tenant_create(slug="acme")
    provider, _ = provider_upsert(name="openai", kind="openai", base_url="https://api.openai.com/v1", api_key="sk-x")
    listed = client.get("/api/tenants", **bearer)
    assert code(listed) == (403, "permission_denied")
    assert b"accounts.view_tenant" in listed.content and b"acme" not in listed.content
    created = client.post(
        "/api/providers",
        orjson.dumps({"name": "evil", "base_url": "https://evil.test/v1", "api_key": "sk-y"}),
        content_type=JSON,
        **bearer,
    )
    assert code(created) == (403, "permission_denied")
    moved = client.patch(
        f"/api/providers/{provider.pk}",
        orjson.dumps({"base_url": "https://evil.test/v1"}),
        content_type=JSON,
        **bearer,
    )
    assert code(moved) == (403, "permission_denied")
    assert not Provider.objects.filter(name="evil").exists()
    assert Provider.objects.get(pk=provider.pk).base_url == "https://api.openai.com/v1"
    assert not AuditEntry.objects.filter(actor__startswith="ops").exists()


def test_with_the_permissions_admin_asks_for_the_same_staff_can_and_the_base_url_move_is_audited(
    client: Client, staff: Any, bearer: dict[str, str]
) -> None:
    tenant_create(slug="acme")
    provider, _ = provider_upsert(name="openai", kind="openai", base_url="https://api.openai.com/v1")
    grant(staff, "view_tenant", "add_provider", "change_provider")
    listed = client.get("/api/tenants", **bearer)
    assert listed.status_code == 200 and [t["slug"] for t in orjson.loads(listed.content)["items"]] == ["acme"]
    created = client.post(
        "/api/providers",
        orjson.dumps({"name": "vllm", "base_url": "http://10.0.0.5:8000/v1"}),
        content_type=JSON,
        **bearer,
    )
    assert created.status_code == 201
    moved = client.patch(
        f"/api/providers/{provider.pk}",
        orjson.dumps({"base_url": "https://other.test/v1"}),
        content_type=JSON,
        **bearer,
    )
    assert moved.status_code == 200
    entry = AuditEntry.objects.get(action="provider.update")
    assert entry.changes == {"base_url": ["https://api.openai.com/v1", "https://other.test/v1"]}
    assert entry.actor.startswith("ops (token ")
    # add and change on providers say nothing about deleting budgets or reading keys
    assert code(client.delete("/api/budgets/1", **bearer)) == (403, "permission_denied")
    assert code(client.get("/api/keys?tenant_id=1", **bearer)) == (403, "permission_denied")


def _operations() -> list[tuple[str, str]]:
    """Every (method, concrete path) of the management API."""
    schema = api.get_openapi_schema()
    filled = {"{tenant_id}": "1", "{key_id}": "1", "{budget_id}": "1", "{provider_id}": "1"}
    operations = []
    for path, methods in schema["paths"].items():
        for name, value in filled.items():
            path = path.replace(name, value)
        operations += [(method.upper(), path) for method in methods]
    return operations


def test_every_operation_refuses_staff_without_permissions_and_none_refuses_a_superuser(
    client: Client, bearer: dict[str, str], admin_user: Any
) -> None:
    operations = _operations()
    assert len(operations) >= 20
    for method, path in operations:
        response = client.generic(method, path, b"{}", content_type=JSON, **bearer)
        assert code(response) == (403, "permission_denied"), (method, path)
    superuser, _ = staff_token_issue(user=admin_user)
    for method, path in operations:
        response = client.generic(method, path, b"{}", content_type=JSON, HTTP_AUTHORIZATION=f"Bearer {superuser}")
        assert response.status_code != 403, (method, path, response.content)


def test_each_operation_needs_exactly_its_models_permission(client: Client, staff: Any, bearer: dict[str, str]) -> None:
    """view to read, add to create, change to edit or revoke, delete to delete: one model at a time."""
    cases = [
        ("GET", "/api/usage/summary", "view_usagerecord"),
        ("GET", "/api/audit", "view_auditentry"),
        ("GET", "/api/prices", "view_price"),
        ("GET", "/api/routes", "view_route"),
        ("POST", "/api/keys/1/revoke", "change_apikey"),
        ("POST", "/api/tenants/1/deactivate", "change_tenant"),
        ("DELETE", "/api/budgets/1", "delete_budget"),
    ]
    for method, path, codename in cases:
        assert code(client.generic(method, path, b"{}", content_type=JSON, **bearer))[1] == "permission_denied"
        grant(staff, codename)
        staff.refresh_from_db()  # (the permission cache lives on the user object)
        assert client.generic(method, path, b"{}", content_type=JSON, **bearer).status_code != 403, path


def test_moving_a_providers_base_url_or_credential_in_admin_is_audited_without_the_secret(admin_client: Client) -> None:
    form = {"name": "adm", "kind": "openai", "base_url": "https://adm.test/v1", "api_key": "sk-admin-secret-1"}
    form |= {"api_key_env": "", "is_active": "on"}
    admin_client.post("/admin/proxy/provider/add/", form)
    provider = Provider.objects.get(name="adm")
    admin_client.post(
        f"/admin/proxy/provider/{provider.pk}/change/", {**form, "api_key": "", "base_url": "https://evil.test/v1"}
    )
    entries = list(AuditEntry.objects.filter(object_id=str(provider.pk)).order_by("id"))
    assert [(e.action, e.actor) for e in entries] == [("provider.create", "admin"), ("provider.update", "admin")]
    assert entries[0].changes["api_key_stored"] == "set"
    assert entries[1].changes == {"base_url": ["https://adm.test/v1", "https://evil.test/v1"]}
    assert b"sk-admin-secret-1" not in orjson.dumps([e.changes for e in entries])
