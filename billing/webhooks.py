"""Signed webhooks: events go to an outbox in the transaction of their cause.

    emit("budget.exceeded", tenant_id=7, dedupe_key="budget.exceeded:budget:12:1717200000", payload={...})

writes one WebhookDelivery per enabled webhook that listens to the event and
covers the tenant, in the caller's transaction: the event commits with what
caused it, or not at all. `dedupe_key` is unique per webhook, so an event
raised again for the same cause (the same budget in the same period, refused
a thousand times) is written once. A Celery task sends the outbox
(billing.webhook_delivery), signed with each webhook's secret.

Code on an event loop (the request path, which queries nothing) calls
`emit_soon` instead: the write happens on a thread of its own, and this
process hands each dedupe key off once.
"""

import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.core.validators import URLValidator
from django.db import connection, transaction
from django.db.models import Q

from accounts.models import Tenant
from billing.models import Webhook, WebhookDelivery
from gateway.kernel.secrets import secret_decrypt, secret_encrypt

log = logging.getLogger(__name__)

EVENTS: dict[str, str] = {
    "budget.threshold": "A budget's spend crossed its soft limit (soft_limit_percent) this period.",
    "budget.exceeded": "A budget is spent, or refused a request, this period.",
    "credit.low": "A prepaid tenant's credit fell below BILLING_CREDIT_LOW_USD, or refused a request.",
    "deployment.circuit_open": "A deployment's circuit breaker opened (at most once an hour per deployment).",
    "price_sync.failed": "A price sync run failed.",
    "reconciliation.mismatch": "The books disagree (at most once a day).",
    "guardrail.blocked": "A guardrail refused a request.",
}
# About the gateway itself, not a tenant: only webhooks without a tenant hear them.
GATEWAY_EVENTS = frozenset({"deployment.circuit_open", "price_sync.failed", "reconciliation.mismatch"})


def emit(event: str, *, tenant_id: int | None, dedupe_key: str, payload: dict[str, Any]) -> int:
    """Write `event` to the outbox of every webhook that wants it, in the
    current transaction; returns how many deliveries are new (0 when no
    webhook listens, or each already has this dedupe key)."""
    if event not in EVENTS:
        raise ValueError(f"unknown webhook event {event!r}")
    hooks = [pk for pk, events in _listening(tenant_id if event not in GATEWAY_EVENTS else None) if event in events]
    if not hooks:
        return 0
    key = dedupe_key[: WebhookDelivery._meta.get_field("dedupe_key").max_length]
    seen = set(
        WebhookDelivery.objects.filter(webhook_id__in=hooks, dedupe_key=key).values_list("webhook_id", flat=True)
    )
    event_id = uuid.uuid4()
    data = orjson.loads(DjangoJSONEncoder().encode(payload))  # Decimals, datetimes: as JSON will hold them
    WebhookDelivery.objects.bulk_create(
        [
            WebhookDelivery(
                webhook_id=pk, event=event, event_id=event_id, dedupe_key=key, tenant_id=tenant_id, payload=data
            )
            for pk in hooks
            if pk not in seen
        ],
        ignore_conflicts=True,  # another process wrote the same event meanwhile: theirs stands
    )
    new = len(hooks) - len(seen)
    if new:
        log.info("webhook event %s (%s) queued for %d webhooks", event, key, new)
    return new


def _listening(tenant_id: int | None) -> list[tuple[int, list[str]]]:
    owners = Q(tenant__isnull=True) | Q(tenant_id=tenant_id) if tenant_id is not None else Q(tenant__isnull=True)
    return list(Webhook.objects.filter(owners, enabled=True).values_list("pk", "events"))


# --- From an event loop ------------------------------------------------------

_HANDED_OFF_MAX = 10_000
_handed_off: set[str] = set()
_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def emit_soon(event: str, *, tenant_id: int | None, dedupe_key: str, payload: dict[str, Any]) -> None:
    """`emit`, for code on an event loop: never blocks, never queries on the
    loop. Each dedupe key is handed off once per process (a storm of
    refusals costs a set lookup each); the database dedupes across processes."""
    if event not in EVENTS:
        raise ValueError(f"unknown webhook event {event!r}")
    run_soon(dedupe_key, lambda: emit(event, tenant_id=tenant_id, dedupe_key=dedupe_key, payload=payload))


def run_soon(dedupe_key: str, work: Callable[[], object]) -> None:
    """Run `work` (which emits) in its own transaction on the webhook thread,
    once per `dedupe_key` in this process; again later if it failed."""
    if dedupe_key in _handed_off:
        return
    if len(_handed_off) >= _HANDED_OFF_MAX:
        _handed_off.clear()  # a key handed off again is deduped by the database
    _handed_off.add(dedupe_key)
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="webhook-emit")
    _executor.submit(_run, dedupe_key, work)


def _run(dedupe_key: str, work: Callable[[], object]) -> None:
    try:
        with transaction.atomic():
            work()
    except Exception:
        _handed_off.discard(dedupe_key)  # the next occurrence tries again
        log.exception("webhook event %s could not be written to the outbox", dedupe_key)
    finally:
        connection.close()  # a thread of its own: give its connection back


def emits_settled(timeout: float = 5.0) -> bool:
    """Wait for the hand-offs queued so far (tests, shutdown)."""
    if _executor is None:
        return True
    try:
        _executor.submit(lambda: None).result(timeout)
    except TimeoutError:
        return False
    return True


# --- Who listens (cached, for the usage writer's per-batch checks) -------------

_subscriptions: tuple[float, frozenset[str]] | None = None


def listened_to(event: str) -> bool:
    """Whether any enabled webhook listens to `event`, as this process saw it
    at most BILLING_WEBHOOK_CACHE_SECONDS ago (and since the last config
    change: billing.apps drops it with the snapshots). Lets the usage writer
    skip a check no webhook would hear."""
    global _subscriptions
    now = time.monotonic()
    if _subscriptions is None or now - _subscriptions[0] > settings.BILLING_WEBHOOK_CACHE_SECONDS:
        names = {
            name for events in Webhook.objects.filter(enabled=True).values_list("events", flat=True) for name in events
        }
        _subscriptions = (now, frozenset(names))
    return event in _subscriptions[1]


def subscriptions_forget() -> None:
    global _subscriptions
    _subscriptions = None


# --- Webhooks themselves -------------------------------------------------------

_url_valid = URLValidator(schemes=["http", "https"])


def webhook_events_parse(names: list[str]) -> list[str]:
    """The event names, checked and in a stable order; ValueError names the
    unknown ones and lists the valid."""
    if not names:
        raise ValueError(f"give at least one event; the events are: {', '.join(EVENTS)}")
    unknown = [name for name in names if name not in EVENTS]
    if unknown:
        raise ValueError(f"unknown event {', '.join(map(repr, unknown))}; the events are: {', '.join(EVENTS)}")
    return [name for name in EVENTS if name in names]


def webhook_url_check(url: str) -> str:
    try:
        _url_valid(url)
    except ValidationError:
        raise ValueError(f"invalid URL {url!r}: give an absolute http:// or https:// URL") from None
    if len(url) > Webhook._meta.get_field("url").max_length:  # type: ignore[operator]  # the field sets one
        raise ValueError("the URL is longer than 500 characters")
    return url


def webhook_set(
    *, url: str, events: list[str], secret: str, tenant: Tenant | None = None, slack: bool = False
) -> tuple[Webhook, str]:
    """Create the webhook of (url, tenant), or bring it to these settings:
    returns it and "created", "updated" or "unchanged". Raises ValueError on
    a bad URL, an unknown event or an empty secret."""
    webhook_url_check(url)
    events = webhook_events_parse(events)
    if not secret:
        raise ValueError("the secret may not be empty")
    with transaction.atomic():
        hook = Webhook.objects.select_for_update().filter(url=url, tenant=tenant).first()
        if hook is None:
            hook = Webhook(url=url, tenant=tenant, events=events, slack=slack)
            webhook_secret_set(hook, secret)
            hook.save()
            return hook, "created"
        if (hook.events, hook.slack, hook.enabled, webhook_secret(hook)) == (events, slack, True, secret):
            return hook, "unchanged"
        hook.events, hook.slack, hook.enabled = events, slack, True
        webhook_secret_set(hook, secret)
        hook.save()
        return hook, "updated"


def webhook_secret_set(hook: Webhook, secret: str) -> None:
    hook.secret_encrypted = secret_encrypt(secret)


def webhook_secret(hook: Webhook) -> str:
    return secret_decrypt(hook.secret_encrypted)
