"""webhook_create and webhook_list as an operator runs them, and webhooks in admin:
bad input refused with a clear message, re-runs safe, the secret never shown."""

from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from accounts.models import AuditEntry, Tenant
from billing.models import Webhook, WebhookDelivery
from billing.webhooks import emit, webhook_secret

pytestmark = pytest.mark.django_db

URL = "https://hooks.example.com/gateway"
SECRET = "whsec-command-secret-42"


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def create(*args: str) -> str:
    return run("webhook_create", *args)[0]


def test_webhook_create_stores_the_webhook_with_its_secret_encrypted_and_never_prints_it() -> None:
    out = create(URL, "--events", "budget.exceeded, budget.threshold", "--secret", SECRET)

    hook = Webhook.objects.get()
    assert out == f"created webhook {hook.pk} {URL} (all tenants): budget.threshold, budget.exceeded\n"
    assert (hook.url, hook.events, hook.tenant, hook.slack, hook.enabled) == (
        URL,
        ["budget.threshold", "budget.exceeded"],
        None,
        False,
        True,
    )
    assert webhook_secret(hook) == SECRET and SECRET not in hook.secret_encrypted
    entry = AuditEntry.objects.get(action="webhook.create")
    assert entry.actor == "manage.py webhook_create" and SECRET not in str(entry.changes)


def test_re_running_webhook_create_is_safe_and_says_what_changed() -> None:
    tenant = Tenant.objects.create(slug="acme")
    args = [URL, "--events", "credit.low", "--secret", SECRET, "--tenant", "acme"]
    create(*args)
    assert create(*args).startswith("unchanged webhook")
    assert create(*args[:-2], "--slack").startswith("created webhook")  # without --tenant: another webhook
    out = create(URL, "--events", "credit.low,budget.exceeded", "--secret", "new-secret", "--tenant", "acme", "--slack")
    assert out.startswith("updated webhook") and "(tenant acme, Slack body)" in out
    hook = Webhook.objects.get(tenant=tenant)
    assert (hook.events, hook.slack, webhook_secret(hook)) == (["budget.exceeded", "credit.low"], True, "new-secret")
    assert Webhook.objects.count() == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["not a url", "--events", "budget.exceeded"], "invalid URL 'not a url': give an absolute http:// or https://"),
        (["ftp://files.example.com/x", "--events", "budget.exceeded"], "invalid URL"),
        (["localhost:8080/hook", "--events", "budget.exceeded"], "invalid URL"),
        ([URL, "--events", "budget.exploded,budget.exceeded"], "unknown event 'budget.exploded'; the events are: "),
        ([URL, "--events", " , "], "give at least one event"),
        ([URL, "--events", "budget.exceeded", "--tenant", "ghost"], "no tenant 'ghost'"),
    ],
)
def test_webhook_create_refuses_bad_input_with_a_clear_message(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message.replace("?", r"\?").replace("(", r"\(")) as refused:
        create(*args, "--secret", SECRET)
    assert "budget.threshold, budget.exceeded, credit.low" in str(refused.value) or "events" not in message
    assert not Webhook.objects.exists()


def test_webhook_create_refuses_an_empty_secret() -> None:
    with pytest.raises(CommandError, match="the secret may not be empty"):
        create(URL, "--events", "budget.exceeded", "--secret", "")


def test_webhook_list_shows_webhooks_and_their_deliveries_but_no_secret() -> None:
    create(URL, "--events", "price_sync.failed", "--secret", SECRET)
    emit("price_sync.failed", tenant_id=None, dedupe_key="one", payload={})
    out, _ = run("webhook_list")
    hook = Webhook.objects.get()
    assert out == f"{hook.pk} {URL} (all tenants): price_sync.failed; 0 delivered, 1 pending, 0 given up\n"
    assert SECRET not in out


def test_a_webhook_added_in_admin_keeps_its_secret_encrypted_and_never_shows_it(admin_client: Any) -> None:
    response = admin_client.post(
        "/admin/billing/webhook/add/",
        {"url": URL, "events": ["budget.exceeded", "guardrail.blocked"], "secret": SECRET, "enabled": "on"},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    hook = Webhook.objects.get()
    assert (hook.events, webhook_secret(hook)) == (["budget.exceeded", "guardrail.blocked"], SECRET)
    # Saved again without a secret: the secret stays.
    admin_client.post(f"/admin/billing/webhook/{hook.pk}/change/", {"url": URL, "events": ["budget.exceeded"]})
    hook.refresh_from_db()
    assert (hook.events, hook.enabled, webhook_secret(hook)) == (["budget.exceeded"], False, SECRET)
    listing = admin_client.get("/admin/billing/webhook/").content.decode()
    change = admin_client.get(f"/admin/billing/webhook/{hook.pk}/change/").content.decode()
    assert "stored (encrypted)" in listing
    for page in (listing, change):
        assert SECRET not in page and hook.secret_encrypted not in page


def test_admin_refuses_a_webhook_without_a_secret_or_with_a_bad_url(admin_client: Any) -> None:
    page = admin_client.post("/admin/billing/webhook/add/", {"url": "nope", "events": ["budget.exceeded"]})
    text = page.content.decode()
    assert "give an absolute http:// or https:// URL" in text and "A new webhook needs a secret." in text
    assert not Webhook.objects.exists()


def test_deliveries_and_the_receivers_answers_are_visible_read_only_in_admin(admin_client: Any) -> None:
    create(URL, "--events", "price_sync.failed", "--secret", SECRET)
    emit("price_sync.failed", tenant_id=None, dedupe_key="seen", payload={})
    WebhookDelivery.objects.update(
        status="failed", attempts=10, response_status=503, response_body="upstream of the receiver is down"
    )
    delivery = WebhookDelivery.objects.get()
    listing = admin_client.get("/admin/billing/webhookdelivery/").content.decode()
    assert "price_sync.failed" in listing and "503" in listing and "Gave up" in listing
    detail = admin_client.get(f"/admin/billing/webhookdelivery/{delivery.pk}/change/").content.decode()
    assert "upstream of the receiver is down" in detail
    assert admin_client.get("/admin/billing/webhookdelivery/add/").status_code == 403

    admin_client.post("/admin/billing/webhookdelivery/", {"action": "send_again", "_selected_action": [delivery.pk]})
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("pending", 0)
