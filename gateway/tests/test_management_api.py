"""The management API at /api/: staff only, every resource, every write audited without secrets."""

import datetime as dt
from decimal import Decimal
from io import StringIO
from typing import Any

import orjson
import pytest
from django.core.management import call_command
from django.middleware.csrf import _get_new_csrf_string
from django.test import Client

from accounts.keys import key_digest
from accounts.models import ApiKey, AuditEntry, StaffToken, Tenant
from accounts.services import api_key_issue, tenant_create
from accounts.staff_tokens import staff_token_issue, staff_token_lookup, staff_token_revoke
from billing.models import Budget, UsageRecord, UsageRollup
from proxy.models import Provider
from proxy.secrets import secret_decrypt

pytestmark = pytest.mark.django_db
JSON = "application/json"


def body(response: Any) -> Any:
    return orjson.loads(response.content)


def post(client: Client, path: str, data: dict[str, Any] | None = None, **extra: Any) -> Any:
    return client.post(path, orjson.dumps(data or {}), content_type=JSON, **extra)


@pytest.fixture
def staff_token(admin_user: Any) -> str:
    plaintext, _ = staff_token_issue(user=admin_user, name="ci")
    return plaintext


@pytest.fixture
def bearer(staff_token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {staff_token}"}


# --- who may call it ------------------------------------------------------------------
def test_without_a_session_or_token_the_api_answers_401_in_json(client: Client) -> None:
    response = client.get("/api/tenants")
    assert (response.status_code, body(response)["error"]["code"]) == (401, "not_authenticated")
    assert post(client, "/api/tenants", {"slug": "x"}).status_code == 401
    assert not Tenant.objects.exists()


def test_a_signed_in_user_who_is_not_staff_gets_403(client: Client, django_user_model: Any) -> None:
    client.force_login(django_user_model.objects.create_user("plain", password="pw-not-used-123"))
    response = client.get("/api/tenants")
    assert (response.status_code, body(response)["error"]["code"]) == (403, "staff_required")


def test_a_virtual_key_a_revoked_token_or_a_former_staff_token_is_refused(client: Client, admin_user: Any) -> None:
    plaintext, _ = api_key_issue(tenant=tenant_create(slug="acme"))
    assert client.get("/api/tenants", HTTP_AUTHORIZATION=f"Bearer {plaintext}").status_code == 401
    token, row = staff_token_issue(user=admin_user)
    assert client.get("/api/tenants", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    staff_token_revoke(token=row)
    assert client.get("/api/tenants", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 401
    other, _ = staff_token_issue(user=admin_user)
    admin_user.is_staff = admin_user.is_superuser = False
    admin_user.save()
    assert client.get("/api/tenants", HTTP_AUTHORIZATION=f"Bearer {other}").status_code == 401


def test_a_session_write_needs_the_csrf_token_and_a_token_write_does_not(
    admin_user: Any, bearer: dict[str, str]
) -> None:
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(admin_user)
    refused = post(browser, "/api/tenants", {"slug": "no-csrf"})
    assert (refused.status_code, body(refused)["error"]["code"]) == (403, "csrf_failed")
    secret = _get_new_csrf_string()
    browser.cookies["csrftoken"] = secret
    assert post(browser, "/api/tenants", {"slug": "with-csrf"}, HTTP_X_CSRFTOKEN=secret).status_code == 201
    assert post(Client(enforce_csrf_checks=True), "/api/tenants", {"slug": "by-token"}, **bearer).status_code == 201
    assert sorted(Tenant.objects.values_list("slug", flat=True)) == ["by-token", "with-csrf"]


def test_the_openapi_docs_are_served_at_api_docs(admin_client: Client) -> None:
    assert admin_client.get("/api/docs").status_code == 200
    schema = body(admin_client.get("/api/openapi.json"))
    assert {"/api/tenants", "/api/keys/{key_id}/rotate", "/api/usage/summary"} <= set(schema["paths"])


# --- tenants ----------------------------------------------------------------------------
def test_tenants_are_created_listed_updated_and_deactivated(admin_client: Client) -> None:
    created = post(admin_client, "/api/tenants", {"slug": "acme", "name": "Acme", "rpm_limit": 60})
    assert created.status_code == 201
    tenant_id = body(created)["id"]
    assert [t["slug"] for t in body(admin_client.get("/api/tenants"))["items"]] == ["acme"]
    patched = admin_client.patch(
        f"/api/tenants/{tenant_id}", orjson.dumps({"rpm_limit": None, "name": "Acme Co"}), content_type=JSON
    )
    assert (body(patched)["name"], body(patched)["rpm_limit"]) == ("Acme Co", None)
    assert body(post(admin_client, f"/api/tenants/{tenant_id}/deactivate"))["is_active"] is False
    assert Tenant.objects.get(pk=tenant_id).is_active is False
    trail = AuditEntry.objects.filter(object_type="accounts.tenant", object_id=str(tenant_id)).order_by("id")
    actions = list(trail.values_list("action", "object_id", "actor"))
    assert actions == [(a, str(tenant_id), "admin") for a in ("tenant.create", "tenant.update", "tenant.deactivate")]
    assert AuditEntry.objects.get(action="tenant.update").changes == {
        "name": ["Acme", "Acme Co"],
        "rpm_limit": [60, None],
    }


def test_a_duplicate_slug_is_a_409_and_a_bad_body_a_400(admin_client: Client) -> None:
    post(admin_client, "/api/tenants", {"slug": "acme"})
    duplicate = post(admin_client, "/api/tenants", {"slug": "acme"})
    assert (duplicate.status_code, body(duplicate)["error"]["code"]) == (409, "conflict")
    invalid = post(admin_client, "/api/tenants", {"slug": "not a slug"})
    assert (invalid.status_code, body(invalid)["error"]["code"]) == (400, "invalid_request")
    missing = admin_client.get("/api/tenants/999999")
    assert (missing.status_code, body(missing)["error"]["code"]) == (404, "not_found")


# --- keys ---------------------------------------------------------------------------------
def test_a_new_key_is_shown_once_and_stored_as_a_digest(admin_client: Client) -> None:
    tenant = tenant_create(slug="acme")
    created = post(admin_client, "/api/keys", {"tenant_id": tenant.pk, "name": "ci", "allowed_models": ["gpt-*"]})
    assert created.status_code == 201
    plaintext = body(created)["key"]
    stored = ApiKey.objects.get(pk=body(created)["id"])
    assert (stored.digest, stored.prefix, stored.allowed_models) == (key_digest(plaintext), plaintext[:12], ["gpt-*"])
    listing = admin_client.get(f"/api/keys?tenant_id={tenant.pk}")
    assert [k["prefix"] for k in body(listing)["items"]] == [plaintext[:12]]
    audit_rows = orjson.dumps(list(AuditEntry.objects.values()), default=str)
    for text in (listing.content, audit_rows):
        assert plaintext.encode() not in text and stored.digest.encode() not in text


def test_revoking_a_key_stops_listing_it_as_live(admin_client: Client) -> None:
    _, key = api_key_issue(tenant=tenant_create(slug="acme"))
    assert body(post(admin_client, f"/api/keys/{key.pk}/revoke"))["revoked_at"] is not None
    assert body(admin_client.get(f"/api/keys?tenant_id={key.tenant_id}"))["items"] == []
    assert len(body(admin_client.get(f"/api/keys?tenant_id={key.tenant_id}&include_revoked=true"))["items"]) == 1


def test_rotating_a_key_issues_one_with_the_same_settings_and_budgets_and_revokes_the_old(admin_client: Client) -> None:
    tenant = tenant_create(slug="acme")
    old_plaintext, old = api_key_issue(tenant=tenant, name="ci", allowed_models=["gpt-*"], tags=["t"], rpm_limit=5)
    assert (
        admin_client.put(
            "/api/budgets", orjson.dumps({"key_id": old.pk, "period": "day", "limit_usd": "2.5"}), content_type=JSON
        ).status_code
        == 200
    )
    rotated = post(admin_client, f"/api/keys/{old.pk}/rotate")
    assert rotated.status_code == 201
    new = ApiKey.objects.get(pk=body(rotated)["id"])
    assert (new.name, new.allowed_models, new.tags, new.rpm_limit) == ("ci", ["gpt-*"], ["t"], 5)
    assert new.digest == key_digest(body(rotated)["key"]) and body(rotated)["key"] != old_plaintext
    old.refresh_from_db()
    assert old.is_revoked
    assert [(b.period, b.limit_usd) for b in Budget.objects.filter(api_key=new)] == [("day", Decimal("2.5"))]
    again = post(admin_client, f"/api/keys/{old.pk}/rotate")
    assert (again.status_code, body(again)["error"]["code"]) == (409, "key_revoked")


# --- budgets ------------------------------------------------------------------------------
def test_budgets_are_set_listed_and_deleted(admin_client: Client) -> None:
    tenant = tenant_create(slug="acme")
    put = admin_client.put(
        "/api/budgets", orjson.dumps({"tenant_id": tenant.pk, "period": "month", "limit_usd": "200"}), content_type=JSON
    )
    assert (put.status_code, body(put)["limit_usd"], body(put)["period"]) == (200, "200.000000000", "month")
    budget_id = body(put)["id"]
    assert [b["id"] for b in body(admin_client.get(f"/api/budgets?tenant_id={tenant.pk}"))["items"]] == [budget_id]
    assert body(admin_client.delete(f"/api/budgets/{budget_id}"))["is_active"] is False
    assert body(admin_client.get(f"/api/budgets?tenant_id={tenant.pk}"))["items"] == []
    both = admin_client.put("/api/budgets", orjson.dumps({"period": "day", "limit_usd": "1"}), content_type=JSON)
    assert (both.status_code, body(both)["error"]["code"]) == (400, "invalid_request")
    bad_period = admin_client.put(
        "/api/budgets", orjson.dumps({"tenant_id": tenant.pk, "period": "year", "limit_usd": "1"}), content_type=JSON
    )
    assert (bad_period.status_code, body(bad_period)["error"]["code"]) == (400, "invalid_request")


# --- providers, routes, prices --------------------------------------------------------------
def test_a_provider_credential_is_write_only_and_never_audited(admin_client: Client) -> None:
    secret = "sk-provider-secret-abcdefghijklmnop"
    created = post(
        admin_client, "/api/providers", {"name": "vllm", "base_url": "http://10.0.0.5:8000/v1/", "api_key": secret}
    )
    assert created.status_code == 201
    assert body(created)["has_stored_key"] is True and "api_key" not in body(created)
    provider = Provider.objects.get(name="vllm")
    assert (provider.base_url, secret_decrypt(provider.api_key_encrypted)) == ("http://10.0.0.5:8000/v1", secret)
    updated = admin_client.patch(
        f"/api/providers/{provider.pk}", orjson.dumps({"api_key_env": "VLLM_TOKEN"}), content_type=JSON
    )
    assert (body(updated)["api_key_env"], body(updated)["has_stored_key"]) == ("VLLM_TOKEN", False)
    listing = admin_client.get("/api/providers").content
    audit_rows = orjson.dumps(list(AuditEntry.objects.values()), default=str)
    for text in (created.content, updated.content, listing, audit_rows):
        assert secret.encode() not in text and provider.api_key_encrypted.encode() not in text
    assert AuditEntry.objects.get(action="provider.create").changes["api_key_stored"] == "set"


def test_routes_are_created_and_listed(admin_client: Client) -> None:
    post(admin_client, "/api/providers", {"name": "openai", "base_url": "https://api.openai.com/v1"})
    created = post(
        admin_client, "/api/routes", {"model": "fast", "provider": "openai", "upstream_model": "gpt-4o-mini"}
    )
    assert created.status_code == 201
    listed = body(admin_client.get("/api/routes"))["items"]
    assert [(r["model"], [(d["provider"], d["upstream_model"]) for d in r["deployments"]]) for r in listed] == [
        ("fast", [("openai", "gpt-4o-mini")])
    ]
    unknown = post(admin_client, "/api/routes", {"model": "x", "provider": "nope"})
    assert (unknown.status_code, body(unknown)["error"]["code"]) == (404, "not_found")


def test_prices_are_set_listed_and_kept_as_history(admin_client: Client) -> None:
    first = post(
        admin_client,
        "/api/prices",
        {
            "model": "gpt-x",
            "input_usd_per_mtok": "0.15",
            "output_usd_per_mtok": "0.6",
            "effective_from": "2026-01-01T00:00:00Z",
        },
    )
    assert (first.status_code, body(first)["changed"]) == (201, True)
    post(
        admin_client,
        "/api/prices",
        {
            "model": "gpt-x",
            "input_usd_per_mtok": "0.10",
            "output_usd_per_mtok": "0.4",
            "effective_from": "2026-02-01T00:00:00Z",
        },
    )
    same = post(
        admin_client,
        "/api/prices",
        {
            "model": "gpt-x",
            "input_usd_per_mtok": "0.10",
            "output_usd_per_mtok": "0.4",
            "effective_from": "2026-03-01T00:00:00Z",
        },
    )
    assert body(same)["changed"] is False
    current = body(admin_client.get("/api/prices?model=gpt-x"))["items"]
    assert [(p["input_usd_per_mtok"], p["output_usd_per_mtok"]) for p in current] == [("0.100000000", "0.400000000")]
    history = body(admin_client.get("/api/prices/history?model=gpt-x"))["items"]
    assert [p["input_usd_per_mtok"] for p in history] == ["0.100000000", "0.150000000"]
    assert AuditEntry.objects.filter(action="price.set").count() == 2


# --- usage --------------------------------------------------------------------------------------
def _usage(key: ApiKey, n: int, model: str = "gpt-test", cost_nanos: int = 1000) -> UsageRecord:
    return UsageRecord.objects.create(
        request_id=f"req_{key.pk}_{n}_{model}",
        created_at=dt.datetime(2026, 1, 1 + n, tzinfo=dt.UTC),
        tenant=key.tenant,
        api_key=key,
        endpoint="chat.completions",
        public_model=model,
        upstream_model=model,
        provider="fake",
        status_code=200,
        input_tokens=10,
        output_tokens=5,
        cost_nanos=cost_nanos,
        latency_ms=100,
    )


def test_usage_is_listed_with_filters_and_cursor_pages(admin_client: Client) -> None:
    _, key = api_key_issue(tenant=tenant_create(slug="acme"))
    _, other = api_key_issue(tenant=tenant_create(slug="other"))
    rows = [_usage(key, n) for n in range(3)] + [_usage(key, 3, model="m2"), _usage(other, 0)]
    first = body(admin_client.get(f"/api/usage?tenant_id={key.tenant_id}&model=gpt-test&limit=2"))
    assert [r["request_id"] for r in first["items"]] == [rows[2].request_id, rows[1].request_id]
    assert first["items"][0]["cost_usd"] == "0.000001000"
    second = body(
        admin_client.get(f"/api/usage?tenant_id={key.tenant_id}&model=gpt-test&limit=2&cursor={first['next_cursor']}")
    )
    assert ([r["request_id"] for r in second["items"]], second["next_cursor"]) == ([rows[0].request_id], None)
    dated = body(admin_client.get(f"/api/usage?key_id={key.pk}&start=2026-01-02T00:00:00Z&end=2026-01-04T00:00:00Z"))
    assert [r["request_id"] for r in dated["items"]] == [rows[2].request_id, rows[1].request_id]


def test_the_usage_summary_sums_the_daily_rollups_by_model(admin_client: Client) -> None:
    _, key = api_key_issue(tenant=tenant_create(slug="acme"))
    for model, cost in (("a", 1_000), ("a", 2_000), ("b", 5)):
        day = dt.datetime(2026, 1, 1 + UsageRollup.objects.count(), tzinfo=dt.UTC)
        UsageRollup.objects.create(
            granularity="day",
            bucket_start=day,
            tenant=key.tenant,
            api_key=key,
            public_model=model,
            provider="fake",
            requests=1,
            input_tokens=10,
            cost_nanos=cost,
        )
    summary = body(
        admin_client.get(f"/api/usage/summary?group_by=model&tenant_id={key.tenant_id}&start=2026-01-01&end=2026-01-31")
    )
    assert [(row["model"], row["requests"], row["cost_usd"]) for row in summary["data"]] == [
        ("a", 2, "0.000003000"),
        ("b", 1, "0.000000005"),
    ]
    assert summary["total"]["cost_usd"] == "0.000003005"


# --- audit and tokens -------------------------------------------------------------------------------
def test_a_write_by_token_is_audited_with_the_token_user_and_request_id(
    bearer: dict[str, str], staff_token: str
) -> None:
    client = Client()
    created = post(client, "/api/tenants", {"slug": "acme"}, **bearer)
    token = StaffToken.objects.get()
    entry = AuditEntry.objects.get(user_id=token.user_id)
    assert (entry.action, entry.object_type, entry.object_id) == (
        "tenant.create",
        "accounts.tenant",
        str(body(created)["id"]),
    )
    assert (entry.user_id, entry.actor) == (token.user_id, f"admin (token {token.prefix}…)")
    assert entry.request_id.startswith("req_")
    assert staff_token not in orjson.dumps(entry.changes).decode()
    query = f"object_type=accounts.tenant&object_id={entry.object_id}"
    listed = body(client.get(f"/api/audit?{query}", **bearer))["items"]
    assert [(e["action"], e["actor"]) for e in listed] == [("tenant.create", entry.actor)]


def test_the_audit_trail_is_read_only_in_admin(admin_client: Client) -> None:
    post(admin_client, "/api/tenants", {"slug": "acme"})
    entry = AuditEntry.objects.get(actor="admin")
    assert admin_client.get("/admin/accounts/auditentry/").status_code == 200
    assert admin_client.get("/admin/accounts/auditentry/add/").status_code == 403
    assert admin_client.post(f"/admin/accounts/auditentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    assert AuditEntry.objects.filter(pk=entry.pk).exists()


def test_staff_token_create_prints_a_working_token_once(admin_user: Any, django_user_model: Any) -> None:
    out = StringIO()
    call_command("staff_token_create", "admin", "--name", "terraform", stdout=out)
    plaintext = out.getvalue().splitlines()[-1]
    token = staff_token_lookup(plaintext)
    assert token is not None and (token.user, token.name, token.digest) == (
        admin_user,
        "terraform",
        key_digest(plaintext),
    )
    django_user_model.objects.create_user("plain", password="pw-not-used-123")
    with pytest.raises(Exception, match="only active staff"):
        call_command("staff_token_create", "plain", stdout=StringIO())
