"""Alerts for staff, computed when the dashboard asks (nothing is stored).

* a deployment (provider + upstream model) whose share of failed requests
  (401, 404, 429, 5xx) over the last ALERT_WINDOW_MINUTES reaches
  ALERT_ERROR_RATE, once it has served at least ALERT_MIN_REQUESTS;
* a budget whose spend this period has reached its soft limit;
* the latest reconciliation report, when it found differences;
* the latest price sync, when it failed;
* models that answered without a price over the last
  ALERT_UNPRICED_WINDOW_HOURS (BILLING_UNPRICED_POLICY allow or default):
  their spend is not on the books at its real rate.

The error rate reads raw records, but only the window's: the created_at
index bounds it to a few minutes of traffic.
"""

import datetime as dt
from dataclasses import dataclass
from urllib.parse import urlencode

from django.conf import settings
from django.db.models import Count, Max, Q, Sum
from django.urls import reverse
from django.utils import timezone

from billing.dashboard import budget_limit_nanos, budget_owner, budgets_with_current_spend
from billing.models import Budget, PriceSyncRun, ReconciliationReport, UsageRecord
from billing.pricing import usd_string

# Failures that say something about a deployment rather than about one
# request: a bad credential, a missing model, rate limits, upstream errors.
FAILED = Q(status_code__in=(401, 404, 429)) | Q(status_code__gte=500)


@dataclass(frozen=True, slots=True)
class Alert:
    kind: str  # error_rate, budget, reconciliation, price_sync, unpriced
    title: str
    detail: str
    url: str = ""


def alerts_current(now: dt.datetime | None = None) -> list[Alert]:
    now = now or timezone.now()
    return [
        *error_rate_alerts(now),
        *budget_alerts(now),
        *reconciliation_alerts(),
        *price_sync_alerts(),
        *unpriced_alerts(now),
    ]


def error_rate_alerts(now: dt.datetime) -> list[Alert]:
    window = dt.timedelta(minutes=settings.ALERT_WINDOW_MINUTES)
    rows = (
        UsageRecord.objects.filter(created_at__gte=now - window, created_at__lte=now)
        .order_by()
        .values("provider", "upstream_model")
        .annotate(requests=Count("pk"), failed=Count("pk", filter=FAILED))
        .order_by("provider", "upstream_model")
    )
    alerts = []
    for row in rows:
        requests, failed = row["requests"], row["failed"]
        if requests < settings.ALERT_MIN_REQUESTS or failed < settings.ALERT_ERROR_RATE * requests:
            continue
        deployment = f"{row['provider']} / {row['upstream_model']}"
        alerts.append(
            Alert(
                kind="error_rate",
                title=f"{deployment}: {failed * 100 // requests}% of requests failed",
                detail=f"{failed} of {requests} requests in the last {settings.ALERT_WINDOW_MINUTES} minutes "
                "answered 401, 404, 429 or 5xx.",
                url=reverse("admin:billing_usagerecord_changelist") + "?" + urlencode({"provider": row["provider"]}),
            )
        )
    return alerts


def budget_alerts(now: dt.datetime) -> list[Alert]:
    budgets = budgets_with_current_spend(
        Budget.objects.filter(is_active=True).select_related("tenant", "api_key").order_by("pk"), now
    )
    alerts = []
    for budget in budgets:
        spent, limit = budget.spent_now_nanos, budget_limit_nanos(budget)  # type: ignore[attr-defined]  # annotated by the queryset
        if spent * 100 < limit * budget.soft_limit_percent:
            continue
        state = "over its limit" if spent >= limit else f"past its {budget.soft_limit_percent}% soft limit"
        alerts.append(
            Alert(
                kind="budget",
                title=f"Budget of {budget_owner(budget)} is {state}",
                detail=f"{usd_string(spent)} of {usd_string(limit)} USD spent this {budget.period}.",
                url=reverse("admin:billing_budget_change", args=[budget.pk]),
            )
        )
    return alerts


def reconciliation_alerts() -> list[Alert]:
    latest = ReconciliationReport.objects.order_by("-created_at", "-pk").first()
    if latest is None or latest.ok:
        return []
    return [
        Alert(
            kind="reconciliation",
            title=f"The books disagree: {len(latest.differences)} differences",
            detail=f"Reconciliation of {latest.created_at:%Y-%m-%d %H:%M} UTC.",
            url=reverse("admin:billing_reconciliationreport_change", args=[latest.pk]),
        )
    ]


def price_sync_alerts() -> list[Alert]:
    latest = PriceSyncRun.objects.order_by("-started_at", "-pk").first()
    if latest is None or latest.ok:
        return []
    return [
        Alert(
            kind="price_sync",
            title="The last price sync failed",
            detail=f"{latest.started_at:%Y-%m-%d %H:%M} UTC: {latest.error[:300] or 'no error recorded'}",
            url=reverse("admin:billing_pricesyncrun_change", args=[latest.pk]),
        )
    ]


def unpriced_alerts(now: dt.datetime) -> list[Alert]:
    """One alert per deployment that answered without a price: free under
    BILLING_UNPRICED_POLICY=allow, at the default rates under =default.
    (Under =refuse such requests never reach an upstream, so never a row.)"""
    hours = settings.ALERT_UNPRICED_WINDOW_HOURS
    rows = (
        UsageRecord.objects.filter(
            created_at__gte=now - dt.timedelta(hours=hours),
            created_at__lte=now,
            price__isnull=True,
            cache_hit=False,
            status_code__lt=400,
        )
        .order_by()
        .values("provider", "upstream_model")
        .annotate(requests=Count("pk"), cost=Sum("cost_nanos"), last=Max("created_at"))
        .order_by("-requests", "provider", "upstream_model")
    )
    return [
        Alert(
            kind="unpriced",
            title=f"{row['provider']} / {row['upstream_model']} answered {row['requests']} requests without a price",
            detail=(
                f"In the last {hours} hours, charged {usd_string(row['cost'] or 0)} USD "
                f"({'default rates' if row['cost'] else 'nothing'}); last at {row['last']:%Y-%m-%d %H:%M} UTC. "
                "Set its price with price_set or in admin."
            ),
            url=reverse("admin:billing_usagerecord_changelist")
            + "?"
            + urlencode({"provider": row["provider"], "upstream_model": row["upstream_model"]}),
        )
        for row in rows
    ]
