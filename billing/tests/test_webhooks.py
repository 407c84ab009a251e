"""Signed webhooks: the outbox, its deliveries, and the events billing raises.

A receiver in the test process checks every signature; the gateway under
test runs under daphne for the events that come from real traffic.
"""

import datetime as dt
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone

from accounts.models import Tenant
from accounts.services import api_key_issue, tenant_create
from billing.ledger import usage_events_store
from billing.models import PriceSyncRun, Webhook, WebhookDelivery
from billing.services import budget_set, credit_add
from billing.tests.test_budgets import event
from billing.tests.webhook_receiver import WebhookReceiver, verify
from billing.webhook_delivery import delivery_body, signature, webhook_deliveries_send
from billing.webhooks import emit, emits_settled, webhook_set
from conftest import IssuedKey, Ledger, wait_until
from proxy.tests.live import LiveGateway

SECRET = "whsec-test-0123456789"
BUDGET_EVENTS = ["budget.threshold", "budget.exceeded", "credit.low"]


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver(secret=SECRET).start()
    yield server
    server.stop()


def hook(receiver: WebhookReceiver, events: list[str], tenant: Tenant | None = None, **options: Any) -> Webhook:
    webhook, _ = webhook_set(url=receiver.url(), events=events, secret=SECRET, tenant=tenant, **options)
    return webhook


def send_later(seconds: float = 0) -> int:
    return webhook_deliveries_send(now=timezone.now() + dt.timedelta(seconds=seconds))


@pytest.fixture
def committed_webhooks(receiver: WebhookReceiver, django_db_blocker: Any) -> Iterator[None]:
    """For tests whose webhooks are committed (a gateway under daphne reads
    them): removed afterwards, so no later test's events reach them."""
    yield
    with django_db_blocker.unblock():
        Webhook.objects.filter(url__startswith=receiver.url("")).delete()


@pytest.fixture
def owner() -> Any:
    tenant = tenant_create(slug="hooked")
    _, key = api_key_issue(tenant=tenant)
    return tenant, key


# --- The outbox and its deliveries ------------------------------------------------


@pytest.mark.django_db
def test_an_event_is_posted_as_json_with_an_event_field_signed_with_the_webhook_secret(
    receiver: WebhookReceiver,
) -> None:
    webhook = hook(receiver, ["price_sync.failed"])
    assert emit("price_sync.failed", tenant_id=None, dedupe_key="run-1", payload={"error": "boom"}) == 1

    assert send_later() == 1

    [got] = receiver.received
    assert got.signature_valid
    assert got.headers["x-gateway-signature"] == signature(SECRET, got.raw)
    assert got.headers["content-type"] == "application/json"
    assert got.json["event"] == "price_sync.failed"
    assert got.json["data"] == {"error": "boom"}
    delivery = WebhookDelivery.objects.get(webhook=webhook)
    assert (delivery.status, delivery.attempts, delivery.response_status, delivery.response_body) == (
        "delivered",
        1,
        200,
        "ok",
    )
    assert got.json["event_id"] == str(delivery.event_id)


def test_the_signature_is_the_hex_hmac_sha256_of_the_raw_body() -> None:
    body = b'{"event":"budget.exceeded"}'
    # Computed independently: printf '%s' "$body" | openssl dgst -sha256 -hmac s3cret
    assert signature("s3cret", body) == "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert verify("s3cret", body, signature("s3cret", body))
    assert not verify("other", body, signature("s3cret", body))


@pytest.mark.django_db
def test_an_event_raised_again_for_the_same_cause_is_written_and_sent_once(receiver: WebhookReceiver) -> None:
    hook(receiver, ["budget.exceeded"])
    payload = {"budget_id": 1}
    assert emit("budget.exceeded", tenant_id=None, dedupe_key="budget.exceeded:budget:1:0", payload=payload) == 1
    for _ in range(50):  # refusal after refusal
        assert emit("budget.exceeded", tenant_id=None, dedupe_key="budget.exceeded:budget:1:0", payload=payload) == 0
    assert emit("budget.exceeded", tenant_id=None, dedupe_key="budget.exceeded:budget:1:86400", payload=payload) == 1

    assert send_later() == 2
    assert send_later(3600) == 0
    assert receiver.events == ["budget.exceeded", "budget.exceeded"]


@pytest.mark.django_db
def test_an_event_commits_with_its_cause_or_not_at_all(receiver: WebhookReceiver) -> None:
    hook(receiver, ["reconciliation.mismatch"])
    with pytest.raises(RuntimeError), transaction.atomic():
        emit("reconciliation.mismatch", tenant_id=None, dedupe_key="r", payload={})
        raise RuntimeError("what caused it failed: the event goes with it")
    assert not WebhookDelivery.objects.exists()


@pytest.mark.django_db
def test_a_receiver_that_is_down_gets_the_event_on_a_later_attempt_and_nothing_is_lost(
    receiver: WebhookReceiver, settings: Any
) -> None:
    settings.BILLING_WEBHOOK_RETRY_SECONDS = 30
    hook(receiver, ["price_sync.failed"])
    receiver.stop()
    emit("price_sync.failed", tenant_id=None, dedupe_key="down", payload={"error": "x"})

    assert send_later() == 0
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("pending", 1, None)
    assert "Connection refused" in delivery.error or "URLError" in delivery.error
    first_retry = delivery.next_attempt_at - delivery.last_attempt_at  # type: ignore[operator]
    assert first_retry == dt.timedelta(seconds=30)
    assert send_later(10) == 0  # not due yet: nothing is attempted
    assert WebhookDelivery.objects.get().attempts == 1
    assert send_later(31) == 0  # still down: twice as long next time
    delivery.refresh_from_db()
    assert delivery.next_attempt_at - delivery.last_attempt_at == dt.timedelta(seconds=60)  # type: ignore[operator]

    receiver.start()  # back, on the same address
    assert send_later(3600) == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("delivered", 3, 200)
    assert receiver.events == ["price_sync.failed"]
    assert receiver.received[0].signature_valid


@pytest.mark.django_db
def test_a_delivery_the_receiver_keeps_refusing_is_given_up_after_the_last_attempt(
    receiver: WebhookReceiver, settings: Any
) -> None:
    settings.BILLING_WEBHOOK_MAX_ATTEMPTS = 3
    receiver.status = 500
    hook(receiver, ["price_sync.failed"])
    emit("price_sync.failed", tenant_id=None, dedupe_key="refused", payload={})
    for hours in range(1, 6):
        send_later(3600 * hours)
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("failed", 3, 500)
    assert delivery.response_body == "receiver error"
    assert len(receiver.received) == 3


@pytest.mark.django_db
def test_a_wrong_secret_is_an_answer_like_any_other_refusal(receiver: WebhookReceiver) -> None:
    webhook_set(url=receiver.url(), events=["price_sync.failed"], secret="not-the-receivers")
    emit("price_sync.failed", tenant_id=None, dedupe_key="x", payload={})
    assert send_later() == 0
    assert (WebhookDelivery.objects.get().response_status, WebhookDelivery.objects.get().status) == (401, "pending")


@pytest.mark.django_db
def test_a_slack_webhook_gets_a_body_slack_displays(receiver: WebhookReceiver, owner: Any) -> None:
    tenant, key = owner
    hook(receiver, BUDGET_EVENTS, slack=True)
    budget_set(tenant=tenant, limit_usd=Decimal("0.000001"), period="day")  # 1000 nanos
    usage_events_store([event(owner, "slack-1", 1000)])

    assert send_later() == 2
    bodies = [r.json for r in receiver.received]
    assert all(set(body) == {"text", "event"} for body in bodies)
    assert all(r.signature_valid for r in receiver.received)
    texts = {body["event"]: body["text"] for body in bodies}
    assert texts["budget.exceeded"] == (
        ":warning: The day budget of tenant hooked is spent: $0.000001000 of $0.000001000."
    )
    assert "passed 80%" in texts["budget.threshold"]


@pytest.mark.django_db
def test_a_tenants_webhook_hears_only_that_tenant_and_none_of_the_gateways_own_events(
    receiver: WebhookReceiver, owner: Any
) -> None:
    tenant, _ = owner
    other = tenant_create(slug="someone-else")
    mine = hook(receiver, ["budget.exceeded", "price_sync.failed"], tenant=tenant)
    everything = webhook_set(url=receiver.url("/all"), events=["budget.exceeded", "price_sync.failed"], secret=SECRET)[
        0
    ]
    emit("budget.exceeded", tenant_id=tenant.pk, dedupe_key="mine", payload={})
    emit("budget.exceeded", tenant_id=other.pk, dedupe_key="theirs", payload={})
    emit("price_sync.failed", tenant_id=None, dedupe_key="sync", payload={})

    assert list(WebhookDelivery.objects.filter(webhook=mine).values_list("dedupe_key", flat=True)) == ["mine"]
    assert set(WebhookDelivery.objects.filter(webhook=everything).values_list("dedupe_key", flat=True)) == {
        "mine",
        "theirs",
        "sync",
    }


@pytest.mark.django_db
def test_a_disabled_webhook_gets_nothing_and_an_unknown_event_is_a_programming_error(
    receiver: WebhookReceiver,
) -> None:
    webhook = hook(receiver, ["price_sync.failed"])
    Webhook.objects.filter(pk=webhook.pk).update(enabled=False)
    assert emit("price_sync.failed", tenant_id=None, dedupe_key="off", payload={}) == 0
    with pytest.raises(ValueError, match="unknown webhook event 'budget.exploded'"):
        emit("budget.exploded", tenant_id=None, dedupe_key="x", payload={})


@pytest.mark.django_db
def test_every_attempt_sends_the_same_bytes(receiver: WebhookReceiver, settings: Any) -> None:
    receiver.status = 503
    hook(receiver, ["price_sync.failed"])
    emit("price_sync.failed", tenant_id=None, dedupe_key="same", payload={"amount_usd": Decimal("0.10")})
    send_later()
    send_later(3600)
    first, second = receiver.received
    assert first.raw == second.raw == delivery_body(WebhookDelivery.objects.select_related("webhook").get())
    assert first.json["data"] == {"amount_usd": "0.10"}  # a Decimal as an exact string


@pytest.mark.django_db
def test_the_secret_is_stored_encrypted(receiver: WebhookReceiver) -> None:
    webhook = hook(receiver, ["price_sync.failed"])
    assert SECRET not in webhook.secret_encrypted
    assert SECRET not in json.dumps(list(Webhook.objects.values()), default=str)


# --- Events billing raises ------------------------------------------------------


@pytest.mark.django_db
def test_a_usage_batch_crossing_the_soft_limit_then_the_limit_raises_threshold_then_exceeded_once(
    receiver: WebhookReceiver, owner: Any
) -> None:
    tenant, key = owner
    hook(receiver, BUDGET_EVENTS, tenant=tenant)
    budget = budget_set(api_key=key, limit_usd=Decimal("0.000001"), period="day", soft_limit_percent=50)  # 1000

    usage_events_store([event(owner, "a", 400)])
    assert not WebhookDelivery.objects.exists()
    usage_events_store([event(owner, "b", 200)])  # 600: past 50%
    assert list(WebhookDelivery.objects.values_list("event", flat=True)) == ["budget.threshold"]
    usage_events_store([event(owner, "c", 100)])
    usage_events_store([event(owner, "d", 300)])  # 1000: spent
    usage_events_store([event(owner, "e", 300)])  # over, again: no second event
    assert sorted(WebhookDelivery.objects.values_list("event", flat=True)) == ["budget.exceeded", "budget.threshold"]

    assert send_later() == 2
    exceeded = next(r.json for r in receiver.received if r.json["event"] == "budget.exceeded")
    assert exceeded["tenant_id"] == tenant.pk
    assert exceeded["data"]["budget_id"] == budget.pk
    assert exceeded["data"]["spent_nanos"] == 1000 and exceeded["data"]["limit_usd"] == "0.000001000"
    assert exceeded["data"]["owner"] == f"key {key.prefix}… of hooked"


@pytest.mark.django_db
def test_a_prepaid_balance_falling_below_the_threshold_raises_credit_low_once_per_top_up(
    receiver: WebhookReceiver, owner: Any, settings: Any
) -> None:
    from billing.webhooks import subscriptions_forget

    settings.BILLING_CREDIT_LOW_USD = Decimal("0.000005")  # 5000 nanos
    tenant, _ = owner
    tenant.is_prepaid = True
    tenant.save()
    credit_add(tenant=tenant, amount_usd=Decimal("0.000010"))
    hook(receiver, ["credit.low"], tenant=tenant)
    subscriptions_forget()  # as the config watch does when a webhook is saved

    usage_events_store([event(owner, "p1", 4000)])  # 6000 left
    assert not WebhookDelivery.objects.exists()
    usage_events_store([event(owner, "p2", 2000)])  # 4000 left
    usage_events_store([event(owner, "p3", 1000)])
    assert WebhookDelivery.objects.count() == 1
    credit_add(tenant=tenant, amount_usd=Decimal("0.000001"))  # not enough: still low after the next request
    usage_events_store([event(owner, "p4", 1000)])
    assert WebhookDelivery.objects.count() == 2

    send_later()
    assert sorted(r.json["data"]["balance_usd"] for r in receiver.received) == ["0.000003000", "0.000004000"]


@pytest.mark.django_db
def test_a_failed_price_sync_raises_price_sync_failed_with_its_run(receiver: WebhookReceiver, tmp_path: Any) -> None:
    from billing.price_file import PriceSyncError
    from billing.sync import prices_sync

    hook(receiver, ["price_sync.failed"])
    broken = tmp_path / "prices.json"
    broken.write_text("{not json")
    with pytest.raises(PriceSyncError):
        prices_sync(str(broken))
    run = PriceSyncRun.objects.get(ok=False)
    send_later()
    [got] = receiver.received
    assert got.json["event"] == "price_sync.failed"
    assert got.json["data"]["run_id"] == run.pk and got.json["data"]["source"] == str(broken)


@pytest.mark.django_db
def test_books_that_disagree_raise_reconciliation_mismatch_once_a_day(receiver: WebhookReceiver, owner: Any) -> None:
    from billing.models import BudgetSpend
    from billing.reconcile import books_reconcile

    tenant, _ = owner
    hook(receiver, ["reconciliation.mismatch"])
    budget = budget_set(tenant=tenant, limit_usd=Decimal("1"), period="day")
    usage_events_store([event(owner, "r1", 100)])
    BudgetSpend.objects.filter(budget=budget).update(spent_nanos=999)  # a counter that drifted

    assert not books_reconcile().ok
    assert not books_reconcile().ok
    send_later()
    [got] = receiver.received
    assert got.json["event"] == "reconciliation.mismatch"
    assert got.json["data"]["differences"] >= 1


def test_an_open_circuit_raises_deployment_circuit_open_once_off_the_event_loop(
    django_db_blocker: Any, receiver: WebhookReceiver, committed_webhooks: None
) -> None:
    import asyncio

    from proxy.circuit_events import circuit_state_reported
    from proxy.models import Deployment
    from proxy.services import provider_upsert, route_upsert

    with django_db_blocker.unblock():  # committed: the webhook thread has a connection of its own
        hook(receiver, ["deployment.circuit_open"])
        provider, _ = provider_upsert(name="circuit-fake", kind="openai", base_url="http://127.0.0.1:9/v1")
        route_upsert(model="circuit-test", provider=provider, upstream_model="up")
        deployment = Deployment.objects.get(route__model="circuit-test")
    key = f"dep:{deployment.pk}:up"

    async def on_the_loop() -> float:
        started = time.perf_counter()
        for _ in range(100):  # a failing probe reopens it, again and again
            circuit_state_reported(key, "open")
        circuit_state_reported(key, "closed")
        return time.perf_counter() - started

    with django_db_blocker.unblock():
        assert asyncio.run(on_the_loop()) < 0.05  # a set lookup each: the write is on the webhook thread
        assert emits_settled()
        [delivery] = WebhookDelivery.objects.filter(payload__deployment=key)
    assert delivery.payload["deployment"] == key
    assert (delivery.payload["provider"], delivery.payload["route"]) == ("circuit-fake", "circuit-test")


# --- Through the gateway ----------------------------------------------------------

BUDGET_REQUEST = {"model": "budget-model", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}


def live_hook(blocker: Any, receiver: WebhookReceiver, key: IssuedKey, usd: str) -> Any:
    from accounts.models import ApiKey

    with blocker.unblock():
        api_key = ApiKey.objects.select_related("tenant").get(pk=key.key_id)
        webhook_set(url=receiver.url(), events=BUDGET_EVENTS, secret=SECRET, tenant=api_key.tenant)
        return budget_set(api_key=api_key, limit_usd=Decimal(usd), period="day")


def deliveries(blocker: Any, budget: Any) -> list[str]:
    with blocker.unblock():
        return sorted(
            WebhookDelivery.objects.filter(dedupe_key__contains=f"budget:{budget.pk}:").values_list("event", flat=True)
        )


def send_all(blocker: Any) -> None:
    with blocker.unblock():
        send_later()


def test_a_budget_spent_through_the_gateway_posts_threshold_and_exceeded_once_however_often_it_refuses(
    live_gateway: LiveGateway,
    key: IssuedKey,
    ledger: Ledger,
    django_db_blocker: Any,
    receiver: WebhookReceiver,
    committed_webhooks: None,
) -> None:
    from billing.tests.test_budgets_live import post

    # The key is new to the gateway: its first request loads it with the budget.
    budget = live_hook(django_db_blocker, receiver, key, "0.00004")  # 2 requests of 20_000 nanos
    statuses = [post(live_gateway, key, BUDGET_REQUEST)[0] for _ in range(8)]
    assert statuses == [200, 200] + [429] * 6
    ledger.wait(key.key_id, 2)

    wait_until(lambda: deliveries(django_db_blocker, budget) == ["budget.exceeded", "budget.threshold"])
    send_all(django_db_blocker)
    assert sorted(receiver.events) == ["budget.exceeded", "budget.threshold"]
    assert all(r.signature_valid for r in receiver.received)
    exceeded = next(r.json for r in receiver.received if r.json["event"] == "budget.exceeded")
    assert (exceeded["tenant_id"], exceeded["data"]["budget_id"]) == (key.tenant_id, budget.pk)
    assert exceeded["data"]["spent_nanos"] == 40_000


def test_a_budget_that_refuses_before_it_is_spent_posts_exceeded_from_the_refusal(
    live_gateway: LiveGateway,
    key: IssuedKey,
    ledger: Ledger,
    django_db_blocker: Any,
    receiver: WebhookReceiver,
    committed_webhooks: None,
) -> None:
    from billing.tests.test_budgets_live import post

    budget = live_hook(django_db_blocker, receiver, key, "0.00003")  # one request, then 10_000 left: too little
    statuses = [post(live_gateway, key, BUDGET_REQUEST)[0] for _ in range(5)]
    assert statuses == [200] + [429] * 4
    ledger.wait(key.key_id, 1)

    wait_until(lambda: deliveries(django_db_blocker, budget) == ["budget.exceeded"])
    send_all(django_db_blocker)
    [got] = receiver.received
    assert got.signature_valid and got.json["event"] == "budget.exceeded"
    assert got.json["data"]["refused_request_usd"] == "0.000020000"
    assert got.json["data"]["spent_nanos"] == 20_000


def test_a_circuit_that_opens_in_the_gateway_posts_deployment_circuit_open_once(
    gateway_config: None,
    django_db_blocker: Any,
    fake_upstream: Any,
    key: IssuedKey,
    receiver: WebhookReceiver,
    committed_webhooks: None,
) -> None:
    from proxy.tests.test_faults import QUICK, RESILIENCE_ENV, Dep, chat, route, routes_create

    routes_create(django_db_blocker, fake_upstream, {"hooked-down": [Dep("fake-error-503", 0)]})
    with django_db_blocker.unblock():
        webhook_set(url=receiver.url(), events=["deployment.circuit_open"], secret=SECRET)
    env = {**RESILIENCE_ENV, "PROXY_RETRY_ATTEMPTS": "1", "PROXY_BREAKER_FAILURES": "2"}
    gateway = LiveGateway(env=env).start()
    try:
        for _ in range(6):  # opens after 2; the rest are sent anyway (every deployment is open)
            chat(gateway, key, route("hooked-down"), "circuit")

        def queued() -> list[Any]:
            with django_db_blocker.unblock():
                return list(WebhookDelivery.objects.filter(event="deployment.circuit_open"))

        wait_until(queued, message="no deployment.circuit_open in the outbox")
    finally:
        gateway.terminate()
    send_all(django_db_blocker)
    [got] = receiver.received
    assert got.signature_valid and got.json["event"] == "deployment.circuit_open"
    assert got.json["tenant_id"] is None
    assert (got.json["data"]["provider"], got.json["data"]["upstream_model"]) == (QUICK, "fake-error-503")
    assert got.json["data"]["route"] == route("hooked-down")
