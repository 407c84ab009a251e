"""The books checked against each other, to the last nano-dollar.

* every budget's spend counter == the usage of its owner in that period;
* every hourly rollup bucket == the raw records it covers (while they are
  kept), and every daily rollup == its hours;
* each prepaid tenant's usage entries in the credit ledger == the prepaid
  part of its usage;
* every usage event on this machine's disk (journals, shutdown spools,
  events the database refused) older than BILLING_RECONCILE_UNSTORED_SECONDS
  is in the books: an event that never arrived is a gap the other checks
  cannot see, since the spend counters are written with the records.

Raw records are pruned after a while, so "the usage" of a scope is read as
the daily rollups plus the raw records not rolled up yet: exact whether or
not the older raw records still exist.
"""

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncHour
from django.utils import timezone

from billing.models import Budget, BudgetSpend, CreditEntry, ReconciliationReport, UsageRecord, UsageRollup
from billing.periods import period_end
from billing.webhook_events import reconciliation_mismatch

log = logging.getLogger(__name__)
HOUR, DAY = UsageRollup.Granularity.HOUR, UsageRollup.Granularity.DAY
_SUMMED = (
    "requests",
    "errors",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_nanos",
)


def usage_cost_nanos(owner: Q, rollup_owner: Q, start: dt.datetime, end: dt.datetime | None) -> int:
    """What an owner's usage cost in [start, end): rolled-up days plus the rest."""
    days = UsageRollup.objects.filter(rollup_owner, granularity=DAY, bucket_start__gte=start)
    raw = UsageRecord.objects.filter(owner, rolled_up=False, created_at__gte=start)
    if end is not None:
        days, raw = days.filter(bucket_start__lt=end), raw.filter(created_at__lt=end)
    return (days.aggregate(t=Sum("cost_nanos"))["t"] or 0) + (raw.aggregate(t=Sum("cost_nanos"))["t"] or 0)


def _budget_differences() -> tuple[int, list[dict[str, Any]]]:
    differences, checked = [], 0
    for spend in BudgetSpend.objects.select_related("budget"):
        budget: Budget = spend.budget
        owner = Q(tenant_id=budget.tenant_id) if budget.tenant_id else Q(api_key_id=budget.api_key_id)
        expected = usage_cost_nanos(owner, owner, spend.period_start, period_end(budget.period, spend.period_start))
        checked += 1
        if expected != spend.spent_nanos:
            differences.append(
                {
                    "check": "budget spend",
                    "budget": budget.pk,
                    "period_start": spend.period_start.isoformat(),
                    "counter": spend.spent_nanos,
                    "usage": expected,
                }
            )
    return checked, differences


def _rollup_differences(kept_since: dt.datetime) -> tuple[int, list[dict[str, Any]]]:
    """Hourly buckets against raw records (where all are rolled up and kept)."""
    differences, checked = [], 0
    group = ("bucket_start", "api_key_id", "public_model", "provider")
    rolled = {
        tuple(row[g] for g in group): row
        for row in UsageRollup.objects.filter(granularity=HOUR, bucket_start__gte=kept_since).values(*group, *_SUMMED)
    }
    pending_hours = set(
        UsageRecord.objects.filter(rolled_up=False)
        .annotate(h=TruncHour("created_at", tzinfo=dt.UTC))
        .values_list("h", flat=True)
    )
    raw = (
        UsageRecord.objects.filter(created_at__gte=kept_since)
        .annotate(bucket_start=TruncHour("created_at", tzinfo=dt.UTC))
        .values(*group)
        .annotate(
            requests=Count("id"),
            errors=Count("id", filter=Q(status_code__gte=400)),
            input_tokens=Sum("input_tokens"),
            cached_input_tokens=Sum("cached_input_tokens"),
            output_tokens=Sum("output_tokens"),
            reasoning_tokens=Sum("reasoning_tokens"),
            cost_nanos=Sum("cost_nanos"),
        )
    )
    for row in raw:
        key = tuple(row[g] for g in group)
        if key[0] in pending_hours:
            continue  # the next rollup run covers it
        checked += 1
        have = rolled.get(key, {})
        for field in _SUMMED:
            if (row[field] or 0) != have.get(field, 0):
                differences.append(
                    {
                        "check": "hourly rollup",
                        "bucket": key[0].isoformat(),
                        "key": key[1],
                        "model": key[2],
                        "field": field,
                        "records": row[field] or 0,
                        "rollup": have.get(field, 0),
                    }
                )
    return checked, differences


def _day_differences() -> tuple[int, list[dict[str, Any]]]:
    hours: dict[tuple[Any, ...], int] = defaultdict(int)
    for row in UsageRollup.objects.filter(granularity=HOUR).values(
        "bucket_start", "api_key_id", "public_model", "provider", "cost_nanos"
    ):
        day = row["bucket_start"].replace(hour=0)
        hours[(day, row["api_key_id"], row["public_model"], row["provider"])] += row["cost_nanos"]
    differences, checked = [], 0
    for row in UsageRollup.objects.filter(granularity=DAY).values(
        "bucket_start", "api_key_id", "public_model", "provider", "cost_nanos"
    ):
        key = (row["bucket_start"], row["api_key_id"], row["public_model"], row["provider"])
        checked += 1
        if hours.get(key, 0) != row["cost_nanos"]:
            differences.append(
                {
                    "check": "daily rollup",
                    "day": key[0].isoformat(),
                    "key": key[1],
                    "model": key[2],
                    "days": row["cost_nanos"],
                    "hours": hours.get(key, 0),
                }
            )
    return checked, differences


def _credit_differences() -> tuple[int, list[dict[str, Any]]]:
    differences, checked = [], 0
    charged = (
        CreditEntry.objects.filter(kind=CreditEntry.Kind.USAGE).values("tenant_id").annotate(t=Sum("amount_nanos"))
    )
    ledger = {row["tenant_id"]: -row["t"] for row in charged}
    rolled = UsageRollup.objects.filter(granularity=DAY).values("tenant_id").annotate(t=Sum("prepaid_cost_nanos"))
    usage: dict[int, int] = defaultdict(int, {row["tenant_id"]: row["t"] or 0 for row in rolled})
    for row in (
        UsageRecord.objects.filter(prepaid=True, rolled_up=False).values("tenant_id").annotate(t=Sum("cost_nanos"))
    ):
        usage[row["tenant_id"]] += row["t"] or 0
    for tenant_id in set(ledger) | {t for t, v in usage.items() if v}:
        checked += 1
        if ledger.get(tenant_id, 0) != usage.get(tenant_id, 0):
            differences.append(
                {
                    "check": "prepaid ledger",
                    "tenant": tenant_id,
                    "ledger": ledger.get(tenant_id, 0),
                    "usage": usage.get(tenant_id, 0),
                }
            )
    return checked, differences


def _events_on_disk() -> Iterator[tuple[Path, dict[str, Any] | None]]:
    """(file, event) for every line of the journals and spools; None for a
    line that cannot be read (a live journal's last line may be half written)."""
    folders = ((Path(settings.BILLING_JOURNAL_DIR), "journal-*"), (Path(settings.BILLING_SPOOL_DIR), "usage-*"))
    for folder, pattern in folders:
        for path in sorted(folder.glob(pattern)) if folder.is_dir() else []:
            try:
                lines = path.read_bytes().splitlines()
            except FileNotFoundError:
                continue  # stored and trimmed meanwhile
            for line in lines:
                try:
                    yield path, orjson.loads(line)
                except orjson.JSONDecodeError:
                    yield path, None


def _unstored_differences(now: dt.datetime) -> tuple[int, list[dict[str, Any]]]:
    """Usage events on disk that the books do not have, once they are old
    enough that the meter or a replay should have stored them."""
    before = now - dt.timedelta(seconds=settings.BILLING_RECONCILE_UNSTORED_SECONDS)
    waiting: dict[str, tuple[Path, int]] = {}
    unreadable: dict[Path, int] = defaultdict(int)
    for path, event in _events_on_disk():
        if event is None or path.suffix == ".bad":
            unreadable[path] += 1
        elif dt.datetime.fromisoformat(event["created_at"]) < before:
            waiting[str(event["request_id"])] = (path, int(event.get("cost_nanos") or 0))
    ids = list(waiting)
    for start in range(0, len(ids), 1000):
        stored = UsageRecord.objects.filter(request_id__in=ids[start : start + 1000]).values_list(
            "request_id", flat=True
        )
        for request_id in stored:
            del waiting[request_id]
    missing: dict[Path, list[int]] = defaultdict(list)
    for path, cost in waiting.values():
        missing[path].append(cost)
    differences: list[dict[str, Any]] = [
        {"check": "usage not in the books", "file": path.name, "events": len(costs), "cost_nanos": sum(costs)}
        for path, costs in sorted(missing.items())
    ]
    differences += [
        {"check": "unreadable usage", "file": path.name, "lines": lines}
        for path, lines in sorted(unreadable.items())
        if path.suffix == ".bad"  # a journal's half-written last line is its live end, not a loss
    ]
    return len(ids), differences


def books_reconcile() -> ReconciliationReport:
    """Roll up what is due, compare every pair of books, store and log the report."""
    from billing.rollups import usage_rollup

    usage_rollup()
    kept_since = timezone.now() - dt.timedelta(days=settings.BILLING_USAGE_RETENTION_DAYS - 1)
    kept_since = kept_since.replace(minute=0, second=0, microsecond=0)
    checked: dict[str, int] = {}
    differences: list[dict[str, Any]] = []
    for name, check in (
        ("budget spends", _budget_differences),
        ("hourly rollups", lambda: _rollup_differences(kept_since)),
        ("daily rollups", _day_differences),
        ("prepaid ledgers", _credit_differences),
        ("usage on disk", lambda: _unstored_differences(timezone.now())),
    ):
        checked[name], found = check()
        differences += found
    with transaction.atomic():  # the report and its webhook event commit together
        report = ReconciliationReport.objects.create(ok=not differences, checked=checked, differences=differences)
        reconciliation_mismatch(report)
    if differences:
        log.error("reconciliation found %d differences: %s", len(differences), differences[:20])
    else:
        log.info("reconciliation: books agree (%s)", checked)
    return report
