"""Sending the webhook outbox (billing.webhooks): the Celery task's work.

Each due delivery is claimed for a lease (so two workers never send the
same one at once), POSTed as JSON signed

    x-gateway-signature: sha256=<hex HMAC-SHA256(secret, raw body)>

and settled: a 2xx answer delivers it; anything else (another status, a
refused connection, a timeout) schedules the next attempt after
BILLING_WEBHOOK_RETRY_SECONDS, doubled each time up to an hour, until
BILLING_WEBHOOK_MAX_ATTEMPTS, when it is given up. Every attempt's answer
(status and the start of the body) stays on the row, for the admin.
"""

import datetime as dt
import hashlib
import hmac
import logging
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from billing.models import WebhookDelivery
from billing.webhooks import webhook_secret
from gateway.kernel.secrets import SecretError

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "x-gateway-signature"
_RETRY_MAX_SECONDS = 3600.0
_CONCURRENCY = 8  # deliveries in flight at once: one slow receiver does not hold up the rest
_USER_AGENT = "llm-gateway-webhooks/1"


def signature(secret: str, body: bytes) -> str:
    """The header's value: `sha256=` and the hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def delivery_body(delivery: WebhookDelivery) -> bytes:
    """What is POSTed: the same bytes on every attempt (receivers dedupe on
    `event_id`). A Slack webhook gets `text` as Slack displays it."""
    if delivery.webhook.slack:
        return orjson.dumps({"text": slack_text(delivery.event, delivery.payload), "event": delivery.event})
    return orjson.dumps(
        {
            "event": delivery.event,
            "event_id": str(delivery.event_id),
            "created_at": delivery.created_at.isoformat(),
            "tenant_id": delivery.tenant_id,
            "data": delivery.payload,
        },
        option=orjson.OPT_SORT_KEYS,
    )


def slack_text(event: str, data: dict[str, Any]) -> str:
    """One line a person reads in a channel."""
    owner = data.get("owner") or (f"tenant {data['tenant']}" if data.get("tenant") else "")
    if event in ("budget.threshold", "budget.exceeded"):
        state = "is spent" if event == "budget.exceeded" else f"passed {data.get('soft_limit_percent')}%"
        return (
            f":warning: The {data.get('period')} budget of {owner} {state}: "
            f"${data.get('spent_usd')} of ${data.get('limit_usd')}."
        )
    if event == "credit.low":
        return f":warning: Prepaid credit of {owner} is low: ${data.get('balance_usd')} left."
    if event == "deployment.circuit_open":
        return f":rotating_light: Deployment {data.get('deployment')} failed repeatedly: its circuit is open."
    if event == "price_sync.failed":
        return f":x: The price sync failed: {data.get('error', '')}"
    if event == "reconciliation.mismatch":
        return f":x: The books disagree: {data.get('differences')} differences."
    if event == "guardrail.blocked":
        return f":no_entry: A guardrail blocked a request of {owner}: {data.get('guardrail', '')}"
    return f"{event}: {orjson.dumps(data).decode()[:300]}"


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int | None  # the receiver's HTTP status; None: no answer
    body: str = ""
    error: str = ""

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def webhook_deliveries_send(*, now: dt.datetime | None = None, limit: int = 100) -> int:
    """Send what is due; returns how many were delivered."""
    claimed = _claim(now or timezone.now(), limit)
    if not claimed:
        return 0
    with ThreadPoolExecutor(max_workers=min(_CONCURRENCY, len(claimed)), thread_name_prefix="webhook-send") as pool:
        outcomes = list(pool.map(_attempt, claimed))
    for delivery, outcome in zip(claimed, outcomes, strict=True):
        delivery_settle(delivery, outcome)
    return sum(outcome.delivered for outcome in outcomes)


def _claim(now: dt.datetime, limit: int) -> list[WebhookDelivery]:
    """Due deliveries, each moved out of reach of other workers for as long
    as an attempt can take."""
    lease = dt.timedelta(seconds=settings.BILLING_WEBHOOK_TIMEOUT_SECONDS * 2 + 30)
    with transaction.atomic():
        due = list(
            WebhookDelivery.objects.due(now)
            .filter(webhook__enabled=True)  # a disabled webhook's deliveries wait for it
            .select_for_update(skip_locked=True, of=("self",))
            .order_by("next_attempt_at", "pk")
            .values_list("pk", flat=True)[:limit]
        )
        WebhookDelivery.objects.filter(pk__in=due).update(next_attempt_at=now + lease)
    return list(WebhookDelivery.objects.filter(pk__in=due).select_related("webhook").order_by("next_attempt_at", "pk"))


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 3xx is the receiver's answer, not a place to send the body again


_opener = urllib.request.build_opener(_NoRedirects)


def _attempt(delivery: WebhookDelivery) -> Outcome:
    try:
        secret = webhook_secret(delivery.webhook)
    except SecretError as exc:
        return Outcome(None, error=str(exc))
    body = delivery_body(delivery)
    request = urllib.request.Request(
        delivery.webhook.url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": _USER_AGENT,
            SIGNATURE_HEADER: signature(secret, body),
            "x-gateway-event": delivery.event,
            "x-gateway-delivery": str(delivery.pk),
        },
    )
    try:
        with _opener.open(request, timeout=settings.BILLING_WEBHOOK_TIMEOUT_SECONDS) as response:
            return Outcome(response.status, _excerpt(response.read(2000)))
    except urllib.error.HTTPError as exc:
        return Outcome(exc.code, _excerpt(exc.read(2000)))
    except Exception as exc:  # refused, reset, timed out, a bad name: try again later
        return Outcome(None, error=f"{type(exc).__name__}: {exc}")


def _excerpt(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").replace("\x00", "")[
        : WebhookDelivery._meta.get_field("response_body").max_length
    ]


def delivery_settle(delivery: WebhookDelivery, outcome: Outcome, now: dt.datetime | None = None) -> None:
    """Record one attempt: delivered, or the next attempt (or given up)."""
    now = now or timezone.now()
    delivery.attempts += 1
    delivery.last_attempt_at = now
    delivery.response_status = outcome.status
    delivery.response_body = outcome.body
    delivery.error = outcome.error[: WebhookDelivery._meta.get_field("error").max_length]
    if outcome.delivered:
        delivery.status, delivery.delivered_at = WebhookDelivery.Status.DELIVERED, now
    elif delivery.attempts >= settings.BILLING_WEBHOOK_MAX_ATTEMPTS:
        delivery.status = WebhookDelivery.Status.FAILED
        log.error("webhook %s: gave up %s after %d attempts", delivery.webhook.url, delivery.event, delivery.attempts)
    else:
        delivery.next_attempt_at = now + retry_delay(delivery.attempts)
    delivery.save(
        update_fields=[
            "attempts",
            "last_attempt_at",
            "response_status",
            "response_body",
            "error",
            "status",
            "delivered_at",
            "next_attempt_at",
        ]
    )


def retry_delay(attempts: int) -> dt.timedelta:
    """After the first failed attempt RETRY seconds, then twice as long each time, at most an hour."""
    return dt.timedelta(seconds=min(settings.BILLING_WEBHOOK_RETRY_SECONDS * 2 ** (attempts - 1), _RETRY_MAX_SECONDS))


def delivery_retry_now(deliveries: Any) -> int:
    """Admin's "send again": pending and due now, with attempts to spare."""
    return deliveries.exclude(status=WebhookDelivery.Status.DELIVERED).update(
        status=WebhookDelivery.Status.PENDING, next_attempt_at=timezone.now(), attempts=0
    )
