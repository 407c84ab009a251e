"""The Redis spend counters brought back in step with the books.

A settlement lost in a Redis blip leaves a counter short of what was
spent (its reservation's lease ends on its own). The books have it once
the meter stores the request, so every minute, and when a server starts,
each counter of a current period is raised to the books' figure; never
lowered, since the books trail Redis by the usage not flushed yet.
"""

import logging

from django.conf import settings
from django.db.models import Q, Sum
from django.utils import timezone

from billing.caps import budget_counter_key, credit_counter_key
from billing.guard import RedisSpendGuard
from billing.models import Budget, BudgetSpend, CreditEntry
from billing.periods import period_start

log = logging.getLogger(__name__)


def spend_counters_resync() -> int:
    """Returns how many counters were raised (0 without Redis)."""
    if not settings.REDIS_URL:
        return 0
    now = timezone.now()
    spent: dict[str, int] = {}
    budgets = list(Budget.objects.filter(is_active=True).only("pk", "period", "tenant_id"))
    starts = {b.pk: period_start(b.period, now) for b in budgets}
    if starts:
        current = Q(*[Q(budget_id=pk, period_start=start) for pk, start in starts.items()], _connector=Q.OR)
        for row in BudgetSpend.objects.filter(current).values("budget_id", "period_start", "spent_nanos"):
            spent[budget_counter_key(row["budget_id"], row["period_start"])] = row["spent_nanos"]
    used = CreditEntry.objects.filter(kind=CreditEntry.Kind.USAGE).values("tenant_id").annotate(t=Sum("amount_nanos"))
    for row in used:
        spent[credit_counter_key(row["tenant_id"])] = -(row["t"] or 0)
    raised = RedisSpendGuard(settings.REDIS_URL).resync_sync(spent)
    if raised:
        log.warning("raised %d spend counters in Redis to the books' figure (settlements lost)", raised)
    return raised
