"""What staff change in admin is in the audit trail, as it is for the management API and the commands."""

from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

from accounts.models import AuditEntry
from accounts.services import api_key_issue, tenant_create

pytestmark = pytest.mark.django_db
NO_BUDGETS = {"budgets-TOTAL_FORMS": "0", "budgets-INITIAL_FORMS": "0"}


def _entries(obj: Any) -> list[tuple[str, str, Any]]:
    rows = AuditEntry.objects.filter(object_type=obj._meta.label_lower, object_id=str(obj.pk), actor="admin")
    return list(rows.order_by("id").values_list("actor", "action", "changes"))


def test_changing_a_tenants_limits_in_admin_is_audited_with_the_old_and_new_values(admin_client: Client) -> None:
    tenant = tenant_create(slug="acme", rpm_limit=60)
    form = {"slug": "acme", "name": "acme", "is_active": "on", "rpm_limit": "120", "trace_sample_rate": "0"}
    form |= {"semantic_scope": "last_user_message", "semantic_include_system": "on"}  # the form's defaults, as sent
    response = admin_client.post(f"/admin/accounts/tenant/{tenant.pk}/change/", {**form, **NO_BUDGETS})
    assert response.status_code == 302, response.content.decode()[:2000]
    assert _entries(tenant) == [("admin", "tenant.update", {"rpm_limit": [60, 120]})]


def test_changing_and_revoking_a_key_in_admin_is_audited(admin_client: Client) -> None:
    _, key = api_key_issue(tenant=tenant_create(slug="acme"), name="ci")
    form = {"name": "ci", "allowed_models": '["gpt-*"]', "tags": "[]", "expires_at": "", "max_parallel": "4"}
    response = admin_client.post(f"/admin/accounts/apikey/{key.pk}/change/", {**form, **NO_BUDGETS})
    assert response.status_code == 302, response.content.decode()[:2000]
    admin_client.post("/admin/accounts/apikey/", {"action": "revoke", "_selected_action": [key.pk]})
    entries = _entries(key)
    assert [action for _, action, _ in entries] == ["key.update", "key.revoke"]
    assert entries[0][2] == {"allowed_models": [None, ["gpt-*"]], "max_parallel": [None, 4]}


def test_provider_create_leaves_an_audit_entry_without_the_credential() -> None:
    call_command(
        "provider_create",
        "vllm",
        "--kind",
        "openai",
        "--base-url",
        "http://10.0.0.5:8000/v1",
        "--api-key",
        "sk-cli-secret-abcdefgh",
        stdout=StringIO(),
    )
    entry = AuditEntry.objects.get(action="provider.create", actor="manage.py provider_create")
    assert entry.changes["base_url"] == "http://10.0.0.5:8000/v1" and entry.changes["api_key_stored"] == "set"
    assert "sk-cli-secret" not in str(entry.changes)
    call_command(
        "provider_create",
        "vllm",
        "--kind",
        "openai",
        "--base-url",
        "http://10.0.0.5:8000/v1",
        "--api-key",
        "sk-cli-secret-abcdefgh",
        stdout=StringIO(),
    )
    assert AuditEntry.objects.filter(actor="manage.py provider_create").count() == 1  # unchanged: nothing to audit
