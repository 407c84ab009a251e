"""The events billing raises (billing.webhooks), each where its cause is written.

* budget.threshold and budget.exceeded: the usage writer (billing.ledger),
  in the batch's transaction, when a batch carries a budget's spend across
  its soft limit or its limit; budget.exceeded also from the request path
  when a budget refuses a request (handed off: no query there).
* credit.low: the usage writer, when a batch leaves a prepaid balance below
  BILLING_CREDIT_LOW_USD; also when the credit refuses a request.
* price_sync.failed and reconciliation.mismatch: with the run or report
  that records them.

Dedupe keys make each fire once per cause: a budget once per period
(`budget.exceeded:budget:<id>:<period start>`, the spend guard's counter),
low credit once per amount credited (a top-up re-arms it), a reconciliation
once a day.
"""

import datetime as dt
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q, Sum

from billing.models import Budget, BudgetSpend, CreditEntry, PriceSyncRun, ReconciliationReport
from billing.periods import period_end
from billing.pricing import usd_string, usd_to_nanos
from billing.webhooks import emit, listened_to, run_soon

if TYPE_CHECKING:
    from billing.caps import SpendCap

log = logging.getLogger(__name__)


@contextmanager
def _never_breaking_the_books() -> Iterator[None]:
    """In a savepoint of the usage writer's transaction: a webhook that
    cannot be written is logged, and the batch's usage is stored all the same."""
    try:
        with transaction.atomic():
            yield
    except Exception:
        log.exception("a webhook event could not be written to the outbox; the usage batch is stored without it")


def budget_counter(budget_id: int, start: dt.datetime) -> str:
    """The budget's period, named as the spend guard names its counter."""
    return f"budget:{budget_id}:{int(start.timestamp())}"


def budget_spend_events(budget: Budget, spend: BudgetSpend, *, added: int) -> None:
    """budget.threshold and budget.exceeded when adding `added` nanos carried
    the spend across the soft limit or the limit (in the writer's transaction)."""
    if not budget.is_active:
        return
    limit = usd_to_nanos(budget.limit_usd)
    after, before = spend.spent_nanos, spend.spent_nanos - added
    crossed = []
    if before * 100 < limit * budget.soft_limit_percent <= after * 100:
        crossed.append("budget.threshold")
    if before < limit <= after:
        crossed.append("budget.exceeded")
    if crossed:
        with _never_breaking_the_books():
            for event in crossed:
                _budget_emit(event, budget, spend.period_start, after)


def _budget_emit(event: str, budget: Budget, start: dt.datetime, spent: int, **extra: Any) -> None:
    limit = usd_to_nanos(budget.limit_usd)
    end = period_end(budget.period, start)
    tenant = budget.tenant if budget.tenant_id else budget.api_key.tenant
    payload = {
        "budget_id": budget.pk,
        "owner": f"tenant {tenant.slug}" if budget.tenant_id else f"key {budget.api_key.prefix}… of {tenant.slug}",
        "tenant": tenant.slug,
        "api_key_id": budget.api_key_id,
        "period": budget.period,
        "period_start": start,
        "period_end": end,
        "limit_usd": usd_string(limit),
        "spent_usd": usd_string(spent),
        "limit_nanos": limit,
        "spent_nanos": spent,
        "soft_limit_percent": budget.soft_limit_percent,
        **extra,
    }
    emit(event, tenant_id=tenant.pk, dedupe_key=f"{event}:{budget_counter(budget.pk, start)}", payload=payload)


def credit_low_events(tenant_ids: set[int]) -> None:
    """credit.low for each of these prepaid tenants whose balance is now
    below BILLING_CREDIT_LOW_USD (one query, and none while no webhook
    listens to credit.low)."""
    if not tenant_ids or not listened_to("credit.low"):
        return
    with _never_breaking_the_books():
        _credit_low_check(tenant_ids)


def _credit_low_check(tenant_ids: set[int]) -> None:
    threshold = usd_to_nanos(settings.BILLING_CREDIT_LOW_USD)
    rows = (
        CreditEntry.objects.filter(tenant_id__in=tenant_ids)
        .order_by()
        .values("tenant_id")
        .annotate(
            credit_in=Sum("amount_nanos", filter=~Q(kind=CreditEntry.Kind.USAGE)),
            balance=Sum("amount_nanos"),
        )
    )
    for row in rows:
        if (row["balance"] or 0) < threshold:
            _credit_emit(row["tenant_id"], credit_in=row["credit_in"] or 0, balance=row["balance"] or 0)


def _credit_emit(tenant_id: int, *, credit_in: int, balance: int, **extra: Any) -> None:
    from accounts.models import Tenant

    slug = Tenant.objects.filter(pk=tenant_id).values_list("slug", flat=True).first()
    payload = {
        "tenant": slug,
        "owner": f"tenant {slug}",
        "balance_usd": usd_string(balance),
        "balance_nanos": balance,
        "credited_usd": usd_string(credit_in),
        "threshold_usd": f"{settings.BILLING_CREDIT_LOW_USD:f}",
        **extra,
    }
    # Once per amount ever credited: a top-up re-arms it.
    emit("credit.low", tenant_id=tenant_id, dedupe_key=f"credit.low:{tenant_id}:{credit_in}", payload=payload)


def spend_refused(cap: "SpendCap", amount: int, used: int) -> None:
    """A budget or the prepaid credit refused a request (billing.caps.refusal,
    on the request path): handed off, once per budget period or credit level."""
    kind, owner_id = cap.kind, int(cap.key.split(":")[1])
    if kind == "credit":
        balance = cap.limit_nanos - used

        def credit() -> None:
            _credit_emit(owner_id, credit_in=cap.limit_nanos, balance=balance, refused_request_usd=usd_string(amount))

        run_soon(f"credit.low:{owner_id}:{cap.limit_nanos}", credit)
        return

    def budget() -> None:
        found = Budget.objects.select_related("tenant", "api_key__tenant").filter(pk=owner_id).first()
        if found is None:
            return
        # The guard's count (spent, and reserved by requests in flight): the
        # books may not have the latest batch yet.
        start = dt.datetime.fromtimestamp(cap.period_start, dt.UTC)
        _budget_emit("budget.exceeded", found, start, used, refused_request_usd=usd_string(amount))

    run_soon(f"budget.exceeded:{cap.key}", budget)


def price_sync_failed(run: PriceSyncRun) -> None:
    emit(
        "price_sync.failed",
        tenant_id=None,
        dedupe_key=f"price_sync.failed:{run.pk}",
        payload={"run_id": run.pk, "source": run.source, "started_at": run.started_at, "error": run.error[:1000]},
    )


def reconciliation_mismatch(report: ReconciliationReport) -> None:
    """Once a day while the books disagree (the check runs every hour)."""
    if report.ok:
        return
    emit(
        "reconciliation.mismatch",
        tenant_id=None,
        dedupe_key=f"reconciliation.mismatch:{report.created_at:%Y-%m-%d}",
        payload={
            "report_id": report.pk,
            "differences": len(report.differences),
            "first_differences": report.differences[:5],
            "checked": report.checked,
        },
    )
