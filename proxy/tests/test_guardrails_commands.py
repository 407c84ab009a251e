"""Guardrails set up from the shell, a declarative file and admin, and loaded into the catalog."""

from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from accounts.models import ApiKey, AuditEntry, Tenant
from accounts.services import api_key_issue, tenant_create
from proxy.catalog_loader import catalog_load
from proxy.models import Guardrail

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue().strip()


def names(owner: Tenant | ApiKey) -> list[str]:
    return sorted(owner.guardrails.values_list("name", flat=True))


def test_guardrail_create_creates_then_says_unchanged_then_updates() -> None:
    create = ("guardrail_create", "no-secrets", "--kind", "secrets", "--action", "block", "--stage", "input")
    assert run(*create) == "created guardrail no-secrets (secrets: block on input)"
    assert run(*create) == "unchanged guardrail no-secrets (secrets: block on input)"
    assert run(*create[:-3], "redact", "--stage", "input") == (
        "updated (action) guardrail no-secrets (secrets: redact on input)"
    )
    guardrail = Guardrail.objects.get(name="no-secrets")
    assert (guardrail.kind, guardrail.action, guardrail.stage, guardrail.enabled) == (
        "secrets",
        "redact",
        "input",
        True,
    )
    assert AuditEntry.objects.filter(action__startswith="guardrail.", object_id=str(guardrail.pk)).count() == 2


def test_guardrail_create_refuses_an_invalid_regex_with_a_message() -> None:
    with pytest.raises(CommandError, match="invalid regular expression"):
        run(
            "guardrail_create", "ids", "--kind", "regex", "--pattern", "EMP-(", "--action", "redact", "--stage", "input"
        )
    with pytest.raises(CommandError, match="needs a pattern"):
        run("guardrail_create", "ids", "--kind", "regex", "--action", "redact", "--stage", "input")
    with pytest.raises(CommandError, match="takes no pattern"):
        run("guardrail_create", "ids", "--kind", "pii", "--pattern", "x", "--action", "flag", "--stage", "input")
    assert not Guardrail.objects.exists()


def test_guardrail_create_stores_a_regex_that_compiles() -> None:
    out = run(
        "guardrail_create",
        "emp",
        "--kind",
        "regex",
        "--pattern",
        r"EMP-\d{6}",
        "--action",
        "redact",
        "--stage",
        "output",
    )
    assert out == "created guardrail emp (regex: redact on output)"
    assert Guardrail.objects.get(name="emp").pattern == r"EMP-\d{6}"


def _two_guardrails() -> None:
    run("guardrail_create", "a", "--kind", "secrets", "--action", "block", "--stage", "input")
    run("guardrail_create", "b", "--kind", "pii", "--action", "redact", "--stage", "output")


def test_tenant_create_attaches_exactly_the_guardrails_given_and_keeps_them_when_not_given() -> None:
    _two_guardrails()
    assert run("tenant_create", "acme", "--guardrails", "a,b") == "created tenant acme, guardrails: a, b"
    tenant = Tenant.objects.get(slug="acme")
    assert names(tenant) == ["a", "b"]
    assert run("tenant_create", "acme") == "unchanged tenant acme"
    assert names(tenant) == ["a", "b"]
    assert run("tenant_create", "acme", "--guardrails", "b") == "updated tenant acme, guardrails: b"
    assert run("tenant_create", "acme", "--guardrails", "") == "updated tenant acme, guardrails: none"
    assert names(tenant) == []


def test_tenant_create_with_an_unknown_guardrail_is_refused_and_creates_nothing() -> None:
    with pytest.raises(CommandError, match="no guardrail 'ghost'"):
        run("tenant_create", "acme", "--guardrails", "ghost")
    assert not Tenant.objects.filter(slug="acme").exists()


def test_key_create_attaches_guardrails_to_the_key() -> None:
    _two_guardrails()
    tenant_create(slug="acme")
    run("key_create", "acme", "--name", "ci", "--guardrails", "b")
    assert names(ApiKey.objects.get(name="ci")) == ["b"]
    with pytest.raises(CommandError, match="no guardrail 'nope'"):
        run("key_create", "acme", "--name", "other", "--guardrails", "b,nope")
    assert not ApiKey.objects.filter(name="other").exists()


GUARDRAILS_FILE = """
guardrails:
  - name: no-secrets
    kind: secrets
    action: block
    stage: input
    tenants: [acme]
  - name: employee-ids
    kind: regex
    pattern: 'EMP-\\d{6}'
    action: redact
    stage: output
"""


def test_gateway_apply_creates_guardrails_attaches_tenants_and_a_second_run_changes_nothing(tmp_path: Path) -> None:
    tenant_create(slug="acme")
    path = tmp_path / "gateway.yaml"
    path.write_text(GUARDRAILS_FILE)
    assert run("gateway_apply", str(path)) == f"applied {path}: 2 guardrail saved"
    assert run("gateway_apply", str(path)) == f"applied {path}: 2 guardrail unchanged"
    assert names(Tenant.objects.get(slug="acme")) == ["no-secrets"]
    assert Guardrail.objects.get(name="employee-ids").pattern == r"EMP-\d{6}"
    path.write_text(GUARDRAILS_FILE.replace("tenants: [acme]", "tenants: []"))
    assert run("gateway_apply", str(path)) == f"applied {path}: 1 guardrail saved, 1 guardrail unchanged"
    assert names(Tenant.objects.get(slug="acme")) == []


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (("'EMP-\\d{6}'", "'EMP-('"), "guardrail employee-ids: invalid regular expression"),
        (("tenants: [acme]", "tenants: [ghost]"), "unknown tenants ghost"),
        (("stage: output", "stage: later"), "unknown stage 'later'"),
        (("stage: output", "stage: output\n    color: red"), "unknown fields color"),
    ],
)
def test_gateway_apply_refuses_a_bad_guardrail_and_applies_nothing(
    tmp_path: Path, change: tuple[str, str], error: str
) -> None:
    tenant_create(slug="acme")
    path = tmp_path / "gateway.yaml"
    path.write_text(GUARDRAILS_FILE.replace(*change))
    with pytest.raises(CommandError, match=error):
        run("gateway_apply", str(path))
    assert not Guardrail.objects.exists()


def test_the_catalog_loads_enabled_guardrails_by_tenant_and_key() -> None:
    _two_guardrails()
    run("guardrail_create", "off", "--kind", "pii", "--action", "flag", "--stage", "input", "--disabled")
    tenant = tenant_create(slug="acme")
    _, key = api_key_issue(tenant=tenant, name="k")
    _, other = api_key_issue(tenant=tenant_create(slug="other"), name="k")
    tenant.guardrails.set(Guardrail.objects.filter(name__in=["a", "off"]))
    key.guardrails.set(Guardrail.objects.filter(name="b"))
    catalog = catalog_load()
    found = catalog.guardrails.for_caller(tenant.pk, key.pk)
    assert [r.name for r in found.input.rules] == ["a"] and [r.name for r in found.output.rules] == ["b"]
    assert catalog.guardrails.for_caller(other.tenant_id, other.pk) is None


def test_enabled_guardrails_add_two_queries_to_a_catalog_load() -> None:
    empty_catalog_queries = _queries_of_a_catalog_load()
    _two_guardrails()
    assert _queries_of_a_catalog_load() == empty_catalog_queries + 2


def _queries_of_a_catalog_load() -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        catalog_load()
    return len(queries)


def test_the_admin_refuses_an_invalid_regex_and_saves_a_valid_one_with_an_audit_entry(admin_client: Any) -> None:
    tenant = tenant_create(slug="acme")
    data = {"name": "ids", "kind": "regex", "pattern": "(", "action": "redact", "stage": "input", "enabled": "on"}
    refused = admin_client.post("/admin/proxy/guardrail/add/", data)
    assert refused.status_code == 200 and "invalid regular expression" in refused.content.decode()
    saved = admin_client.post("/admin/proxy/guardrail/add/", {**data, "pattern": r"ID-\d+", "tenants": [tenant.pk]})
    assert saved.status_code == 302
    guardrail = Guardrail.objects.get(name="ids")
    assert names(tenant) == ["ids"]
    assert AuditEntry.objects.filter(action="guardrail.create", object_id=str(guardrail.pk)).exists()
    listed = admin_client.get("/admin/proxy/guardrail/").content.decode()
    assert "ids" in listed and "acme" in listed
