"""What the request path needs to know about a caller's money, read once
when accounts.snapshots loads the caller's key (off the warm path)."""

from typing import Any

from django.db.models import Exists, OuterRef, Q, QuerySet, Sum
from django.utils import timezone

from billing.models import Budget, BudgetSpend, CreditEntry
from billing.periods import period_start
from billing.pricing import usd_to_nanos
from gateway.kernel.context import BudgetRule


def with_budget_flag(keys: QuerySet[Any]) -> QuerySet[Any]:
    """Annotate API keys with `has_budgets`, so that loading a caller without
    budgets stays one query."""
    owned = Budget.objects.filter(Q(tenant_id=OuterRef("tenant_id")) | Q(api_key_id=OuterRef("pk")), is_active=True)
    return keys.annotate(has_budgets=Exists(owned))


def spend_state(*, tenant_id: int, key_id: int, prepaid: bool, has_budgets: bool = True) -> dict[str, Any]:
    """Budgets, their spend this period and the prepaid balance, as
    TenantContext fields (no query without budgets or credit, three at most)."""
    now = timezone.now()
    owned = Q(tenant_id=tenant_id) | Q(api_key_id=key_id)
    budgets = list(Budget.objects.filter(owned, is_active=True)) if has_budgets else []
    state: dict[str, Any] = {
        "budgets": tuple(BudgetRule(b.pk, b.period, usd_to_nanos(b.limit_usd)) for b in budgets),
        "prepaid": prepaid,
    }
    if budgets:
        starts = {b.pk: period_start(b.period, now) for b in budgets}
        spends = BudgetSpend.objects.filter(
            Q(*[Q(budget_id=pk, period_start=start) for pk, start in starts.items()], _connector=Q.OR)
        )
        state["budget_spent"] = {(s.budget_id, s.period_start): s.spent_nanos for s in spends}
    if prepaid:
        totals = CreditEntry.objects.filter(tenant_id=tenant_id).aggregate(
            credit_in=Sum("amount_nanos", filter=~Q(kind=CreditEntry.Kind.USAGE)),
            used=Sum("amount_nanos", filter=Q(kind=CreditEntry.Kind.USAGE)),
        )
        state["credit_in_nanos"] = totals["credit_in"] or 0
        state["credit_used_nanos"] = -(totals["used"] or 0)
    return state


class SpendContext:
    """Budgets and credit in the caller's context (accounts.snapshots.ContextPart,
    registered in billing.apps)."""

    def annotate(self, keys: QuerySet[Any]) -> QuerySet[Any]:
        return with_budget_flag(keys)

    def fields(self, key: Any) -> dict[str, Any]:
        tenant = key.tenant
        return spend_state(
            tenant_id=tenant.pk, key_id=key.pk, prepaid=tenant.is_prepaid, has_budgets=getattr(key, "has_budgets", True)
        )
