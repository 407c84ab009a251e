"""Configuration that could never work is refused with a message that says what to do,
and every write of money, access or routing from the command line leaves an audit entry."""

from io import StringIO
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from accounts.models import ApiKey, AuditEntry, Tenant
from accounts.services import tenant_create
from proxy.models import ModelAlias, Provider, Route

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def apply(tmp_path: Path, doc: dict[str, Any]) -> str:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(doc))
    return run("gateway_apply", str(path))


def test_alias_create_to_a_route_that_does_not_exist_is_refused_with_what_to_do() -> None:
    with pytest.raises(CommandError) as refused:
        run("alias_create", "x", "--to", "no-such-route")
    message = str(refused.value)
    assert "no active route named 'no-such-route'" in message
    assert "route_create no-such-route --provider" in message
    assert not ModelAlias.objects.exists()


def test_gateway_apply_refuses_an_alias_to_a_route_that_does_not_exist_and_applies_nothing(tmp_path: Path) -> None:
    doc = {
        "providers": [{"name": "a", "base_url": "https://a.test/v1"}],
        "routes": [{"model": "gpt-4o", "provider": "a"}],
        "aliases": [{"pattern": "big", "to": "gpt-4o"}, {"pattern": "x", "to": "no-such-route"}],
    }
    with pytest.raises(CommandError, match="no active route named 'no-such-route'.*nothing was applied"):
        apply(tmp_path, doc)
    assert not Provider.objects.filter(name="a").exists() and not ModelAlias.objects.exists()
    doc["aliases"] = [{"pattern": "big", "to": "gpt-4o"}]  # a target the same file declares is fine
    assert "1 alias saved" in apply(tmp_path, doc)


def test_a_route_without_a_provider_in_gateway_apply_is_told_the_provider_is_missing(tmp_path: Path) -> None:
    doc = {"providers": [{"name": "a", "base_url": "https://a.test/v1"}], "routes": [{"model": "gpt-4o"}]}
    with pytest.raises(CommandError) as refused:
        apply(tmp_path, doc)
    assert "route gpt-4o: the provider is missing; add provider: NAME" in str(refused.value)
    assert "not both" not in str(refused.value)
    doc["routes"] = [{"model": "gpt-4o", "provider": ""}]
    with pytest.raises(CommandError, match="route gpt-4o: the provider is missing"):
        apply(tmp_path, doc)
    assert not Route.objects.filter(model="gpt-4o").exists()


@pytest.mark.parametrize(
    ("flag", "value"), [("--rpm", "0"), ("--tpm", "0"), ("--max-parallel", "0"), ("--rpm", "-1"), ("--tpm", "-5")]
)
def test_key_create_refuses_a_limit_of_zero_or_less(flag: str, value: str) -> None:
    tenant_create(slug="acme")
    with pytest.raises(CommandError) as refused:
        run("key_create", "acme", flag, value)
    assert flag in str(refused.value) or "invalid number" in str(refused.value)
    if value == "0":
        assert "at least 1" in str(refused.value) and "would refuse every request" in str(refused.value)
    assert not ApiKey.objects.exists()


@pytest.mark.parametrize("field", ["rpm_limit", "tpm_limit", "max_parallel"])
@pytest.mark.parametrize("value", [0, -1])
def test_the_management_api_refuses_a_key_limit_of_zero_or_less_with_a_400(
    admin_client: Client, field: str, value: int
) -> None:
    tenant = tenant_create(slug="acme")
    payload = orjson.dumps({"tenant_id": tenant.pk, field: value})
    response = admin_client.post("/api/keys", payload, content_type="application/json")
    assert response.status_code == 400
    assert orjson.loads(response.content)["error"]["code"] == "invalid_request"
    assert not ApiKey.objects.exists()


def test_tenant_create_refuses_a_limit_of_zero() -> None:
    with pytest.raises(CommandError, match="--max-parallel must be a whole number of at least 1"):
        run("tenant_create", "acme", "--max-parallel", "0")
    assert not Tenant.objects.exists()


def _trail(*object_types: str) -> list[tuple[str, str]]:
    rows = AuditEntry.objects.filter(actor__startswith="manage.py", object_type__in=object_types).order_by("id")
    return list(rows.values_list("actor", "action"))


def test_every_command_that_changes_access_leaves_an_audit_entry_naming_the_command() -> None:
    run("tenant_create", "acme", "--budget", "5", "--budget-period", "month")
    key_line = StringIO()
    call_command("key_create", "acme", "--rpm", "10", stdout=key_line, stderr=StringIO())
    plaintext = key_line.getvalue().splitlines()[-1]
    prefix = ApiKey.objects.get().prefix
    run("key_revoke", prefix)
    assert _trail("accounts.tenant", "accounts.apikey", "billing.budget") == [
        ("manage.py tenant_create", "tenant.create"),
        ("manage.py tenant_create", "budget.set"),
        ("manage.py key_create", "key.create"),
        ("manage.py key_revoke", "key.revoke"),
    ]
    assert plaintext not in orjson.dumps(list(AuditEntry.objects.values("changes"))).decode()
    run("tenant_create", "acme", "--rpm", "30")
    assert _trail("accounts.tenant")[-1] == ("manage.py tenant_create", "tenant.update")
    assert AuditEntry.objects.filter(action="tenant.update").get().changes == {"rpm_limit": [None, 30]}


def test_every_command_that_changes_routing_leaves_an_audit_entry_and_a_re_run_leaves_none(tmp_path: Path) -> None:
    doc = {
        "providers": [{"name": "a", "base_url": "https://a.test/v1", "api_key": "sk-file-secret-123456789"}],
        "routes": [{"model": "gpt-4o", "provider": "a"}],
        "aliases": [{"pattern": "big", "to": "gpt-4o"}],
        "prices": [{"model": "gpt-4o", "input": "2.5", "output": "10"}],
    }
    apply(tmp_path, doc)
    run("route_create", "mini", "--provider", "a")
    run("alias_create", "small", "--to", "mini")
    run("alias_create", "small", "--delete")
    types = ("proxy.provider", "proxy.route", "proxy.modelalias", "billing.price")
    expected = [
        ("manage.py gateway_apply", "provider.create"),
        ("manage.py gateway_apply", "route.set"),
        ("manage.py gateway_apply", "alias.upsert"),
        ("manage.py gateway_apply", "price.set"),
        ("manage.py route_create", "route.upsert"),
        ("manage.py alias_create", "alias.upsert"),
        ("manage.py alias_create", "alias.delete"),
    ]
    assert _trail(*types) == expected
    apply(tmp_path, doc)  # nothing changed: nothing to audit
    assert _trail(*types) == expected
    created = AuditEntry.objects.get(action="provider.create")
    assert created.changes["base_url"] == "https://a.test/v1" and created.changes["api_key_stored"] == "set"
    assert b"sk-file-secret" not in orjson.dumps(list(AuditEntry.objects.values("changes")))
    doc["providers"][0]["base_url"] = "https://moved.test/v1"
    apply(tmp_path, doc)
    moved = AuditEntry.objects.filter(action="provider.update").get()
    assert moved.changes == {"base_url": ["https://a.test/v1", "https://moved.test/v1"]}
