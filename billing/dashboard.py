"""The operations dashboard's numbers, read from the rollups.

Never from the raw ledger: a chart over 90 days of a busy gateway would
otherwise scan millions of records. The price is freshness: the charts
stop at the last rollup run (every five minutes); the live feed shows what
happened since. Money stays in integer nano-dollars all the way to the
browser, which only formats it.
"""

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db.models import BigIntegerField, Max, Q, QuerySet, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from billing.histograms import LATENCY_COLUMNS, TTFT_COLUMNS, percentile_ms
from billing.models import Budget, UsageRollup
from billing.models.budgets import Period
from billing.periods import period_end, period_start
from billing.pricing import NANOS_PER_USD, usd_to_nanos
from billing.rollups import DAY, HOUR, bucket_start

PERIOD_DAYS = (7, 30, 90)
# Stacked charts show the biggest spenders by name and the rest as one band.
TOP_SERIES = 8
OTHER = "other"
_STEP = {HOUR: dt.timedelta(hours=1), DAY: dt.timedelta(days=1)}


@dataclass(frozen=True, slots=True)
class Window:
    """Consecutive rollup buckets [start, end) of one granularity."""

    granularity: str
    start: dt.datetime
    end: dt.datetime
    tenant_id: int | None = None  # one tenant's rollups only

    @classmethod
    def last(cls, days: int, granularity: str, now: dt.datetime, tenant_id: int | None = None) -> "Window":
        """The `days` days up to and including the bucket that holds `now`."""
        end = bucket_start(now, granularity) + _STEP[granularity]
        return cls(granularity, end - dt.timedelta(days=days), end, tenant_id)

    def buckets(self) -> list[dt.datetime]:
        step = _STEP[self.granularity]
        count = (self.end - self.start) // step
        return [self.start + i * step for i in range(count)]

    def rollups(self) -> QuerySet[UsageRollup]:
        # The unique index (granularity, bucket_start, ...) serves this range.
        rollups = UsageRollup.objects.filter(
            granularity=self.granularity, bucket_start__gte=self.start, bucket_start__lt=self.end
        ).order_by()
        return rollups if self.tenant_id is None else rollups.filter(tenant_id=self.tenant_id)


def traffic_granularity(days: int) -> str:
    """Hours for a week (168 points), days beyond."""
    return HOUR if days <= 7 else DAY


# --- Spend, stacked ------------------------------------------------------------------


def spend_stacks(window: Window) -> dict[str, dict[str, Any]]:
    """Cost per bucket split by tenant and by model, from one pass over the
    rollups (grouped by both; the two splits are summed here)."""
    by_tenant: Cells = defaultdict(lambda: defaultdict(int))
    by_model: Cells = defaultdict(lambda: defaultdict(int))
    rows = window.rollups().values_list("bucket_start", "tenant__slug", "public_model").annotate(cost=Sum("cost_nanos"))
    for bucket, tenant, model, cost in rows:
        by_tenant[tenant][bucket] += cost or 0
        by_model[model][bucket] += cost or 0
    return {"by_tenant": stacked(window, by_tenant), "by_model": stacked(window, by_model)}


Cells = dict[str, dict[dt.datetime, int]]


def stacked(window: Window, cells: Cells) -> dict[str, Any]:
    """The TOP_SERIES largest series by name, the rest summed as "other"."""
    ranked = sorted(cells, key=lambda name: (-sum(cells[name].values()), name))
    named, rest = ranked[:TOP_SERIES], ranked[TOP_SERIES:]
    buckets = window.buckets()
    series = [{"name": name, "values": [cells[name][b] for b in buckets]} for name in named]
    if rest:
        series.append({"name": OTHER, "values": [sum(cells[name][b] for name in rest) for b in buckets]})
    return {"labels": _labels(buckets), "series": series}


# --- Requests, errors, latency, cache ------------------------------------------------

_TRAFFIC_SUMS = ("requests", "errors", "cache_hits", "saved_nanos", "cost_nanos", *LATENCY_COLUMNS, *TTFT_COLUMNS)


def traffic(window: Window) -> dict[str, Any]:
    """Per bucket: requests, error rate, latency and time-to-first-token
    percentiles, cache hit rate and savings. One grouped query."""
    rows = window.rollups().values("bucket_start").annotate(**{name: Sum(name) for name in _TRAFFIC_SUMS})
    by_bucket = {row["bucket_start"]: row for row in rows}
    buckets = window.buckets()
    points = [_traffic_point(by_bucket.get(b)) for b in buckets]
    return {
        "granularity": window.granularity,
        "labels": _labels(buckets),
        **{name: [point[name] for point in points] for name in _TRAFFIC_POINT},
    }


_TRAFFIC_POINT = (
    "requests",
    "errors",
    "error_rate",
    "latency_p50_ms",
    "latency_p95_ms",
    "ttft_p50_ms",
    "ttft_p95_ms",
    "cache_hits",
    "cache_hit_rate",
    "saved_nanos",
    "cost_nanos",
)


def _traffic_point(row: dict[str, Any] | None) -> dict[str, Any]:
    row = row or {}
    requests, errors, hits = (row.get(name) or 0 for name in ("requests", "errors", "cache_hits"))
    latency = [row.get(name) or 0 for name in LATENCY_COLUMNS]
    ttft = [row.get(name) or 0 for name in TTFT_COLUMNS]
    return {
        "requests": requests,
        "errors": errors,
        "error_rate": _ratio(errors, requests),
        "latency_p50_ms": percentile_ms(latency, 50),
        "latency_p95_ms": percentile_ms(latency, 95),
        "ttft_p50_ms": percentile_ms(ttft, 50),
        "ttft_p95_ms": percentile_ms(ttft, 95),
        "cache_hits": hits,
        "cache_hit_rate": _ratio(hits, requests),
        "saved_nanos": row.get("saved_nanos") or 0,
        "cost_nanos": row.get("cost_nanos") or 0,
    }


def _ratio(part: int, whole: int) -> float | None:
    """A rate for display (never money), rounded to 0.1%."""
    return round(part / whole, 3) if whole else None


# --- Budgets -----------------------------------------------------------------------------


def budgets_with_current_spend(budgets: QuerySet[Budget], now: dt.datetime) -> QuerySet[Budget]:
    """Annotate `spent_now_nanos`: each budget's spend in its current period
    (the meter's exact counter, one row per period)."""
    current = Q()
    for period in Period.values:
        current |= Q(period=period, spends__period_start=period_start(period, now))
    spent = Sum("spends__spent_nanos", filter=current)
    return budgets.annotate(spent_now_nanos=Coalesce(spent, 0, output_field=BigIntegerField()))


def budget_limit_nanos(budget: Budget) -> int:
    return usd_to_nanos(budget.limit_usd)


def budget_owner(budget: Budget) -> str:
    if budget.tenant_id:
        return f"tenant {budget.tenant.slug}"
    return f"key {budget.api_key.prefix} ({budget.api_key.name or 'unnamed'})"


def budget_burndown(now: dt.datetime, limit: int = 20, tenant_id: int | None = None) -> list[dict[str, Any]]:
    """Active budgets, most used first: spent so far this period, the limit,
    and the spend projected to the period's end at the pace so far."""
    active = Budget.objects.filter(is_active=True).select_related("tenant", "api_key")
    if tenant_id is not None:
        active = active.filter(Q(tenant_id=tenant_id) | Q(api_key__tenant_id=tenant_id))
    budgets = budgets_with_current_spend(active, now)
    rows = [_burndown_row(budget, now) for budget in budgets]
    rows.sort(key=lambda row: (-row["used_per_mille"], row["owner"]))
    return rows[:limit]


def _burndown_row(budget: Budget, now: dt.datetime) -> dict[str, Any]:
    spent, limit = budget.spent_now_nanos, budget_limit_nanos(budget)  # type: ignore[attr-defined]  # annotated by the queryset
    start = period_start(budget.period, now)
    end = period_end(budget.period, start)
    return {
        "budget_id": budget.pk,
        "owner": budget_owner(budget),
        "period": budget.period,
        "period_start": start.isoformat(),
        "period_end": end.isoformat() if end else None,
        "spent_nanos": spent,
        "limit_nanos": limit,
        "projected_nanos": projected_nanos(spent, start, end, now),
        "soft_limit_percent": budget.soft_limit_percent,
        "used_per_mille": spent * 1000 // limit if limit else (1000 if spent else 0),
    }


def projected_nanos(spent: int, start: dt.datetime, end: dt.datetime | None, now: dt.datetime) -> int | None:
    """The spend at the period's end if it goes on at its pace so far
    (None for an all-time budget, which has no end)."""
    if end is None:
        return None
    elapsed = max((now - start).total_seconds(), 60.0)  # the first minute says nothing about a pace
    total = (end - start).total_seconds()
    return spent * int(total) // int(elapsed)


# --- The whole page -------------------------------------------------------------------------


def rolled_up_until() -> dt.datetime | None:
    """The newest hourly bucket (the unique index's prefix answers this)."""
    return UsageRollup.objects.filter(granularity=HOUR).aggregate(last=Max("bucket_start"))["last"]


def dashboard_data(days: int, now: dt.datetime | None = None, tenant_id: int | None = None) -> dict[str, Any]:
    """Everything the charts draw, JSON-ready, for every tenant or one.
    Money as integer nano-dollars."""
    if days not in PERIOD_DAYS:
        raise ValueError(f"the dashboard shows {', '.join(map(str, PERIOD_DAYS))} days, not {days}")
    now = now or timezone.now()
    spend = spend_stacks(Window.last(days, DAY, now, tenant_id))
    last = rolled_up_until()
    return {
        "days": days,
        "now": now.isoformat(),
        "rolled_up_until": last.isoformat() if last else None,
        "nanos_per_usd": NANOS_PER_USD,
        "spend_by_tenant": spend["by_tenant"],
        "spend_by_model": spend["by_model"],
        "tenant_id": tenant_id,
        "traffic": traffic(Window.last(days, traffic_granularity(days), now, tenant_id)),
        "budgets": budget_burndown(now, tenant_id=tenant_id),
    }


def _labels(buckets: Iterable[dt.datetime]) -> list[str]:
    return [b.isoformat() for b in buckets]
