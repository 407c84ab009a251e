"""What billing does when accounts change (connected in billing.apps)."""

from typing import Any

from accounts.audit import AuditActor, audit
from accounts.models import ApiKey
from billing.services import budget_set


def key_budgets_copy(
    sender: Any, *, old: ApiKey, new: ApiKey, actor: AuditActor = None, request_id: str = "", **_: Any
) -> None:
    """A rotated key keeps its budget limits: each active budget is copied,
    not moved. A budget's spend must equal its owner's usage (the
    reconciliation checks it), so the copies count the new key's spending
    from zero; the tenant's budgets are unaffected."""
    for budget in old.budgets.filter(is_active=True):
        copy = budget_set(
            api_key=new, period=budget.period, limit_usd=budget.limit_usd, soft_limit_percent=budget.soft_limit_percent
        )
        changes = {"key_id": new.pk, "period": copy.period, "limit_usd": copy.limit_usd}
        audit(actor, "budget.set", copy, changes, request_id=request_id)
