"""/api/budgets: list, set (create or change), delete."""

from django.db.models import Q
from django.http import HttpRequest
from ninja import Router
from ninja.pagination import paginate

from billing.models import Budget
from billing.services import budget_set
from gateway.manage_api.errors import ManagementError, not_found
from gateway.manage_api.keys import key_get
from gateway.manage_api.schemas import BudgetIn, BudgetOut
from gateway.manage_api.tenants import tenant_get
from gateway.manage_api.writes import audited_write

router = Router(tags=["Budgets"])


@router.get("/budgets", response=list[BudgetOut])
@paginate
def budgets_list(
    request: HttpRequest, tenant_id: int | None = None, key_id: int | None = None, include_inactive: bool = False
):
    """With `tenant_id`: the tenant's budgets and those of its keys."""
    budgets = Budget.objects.order_by("id")
    if tenant_id is not None:
        budgets = budgets.filter(Q(tenant_id=tenant_id) | Q(api_key__tenant_id=tenant_id))
    if key_id is not None:
        budgets = budgets.filter(api_key_id=key_id)
    return budgets if include_inactive else budgets.filter(is_active=True)


@router.put("/budgets", response=BudgetOut)
def budgets_set(request: HttpRequest, payload: BudgetIn) -> Budget:
    """Create or change the budget of `period` on a tenant or on a key (give exactly one)."""
    if (payload.tenant_id is None) == (payload.key_id is None):
        raise ManagementError(400, "invalid_request", "Give exactly one of tenant_id and key_id.")
    with audited_write(request) as write:
        tenant = tenant_get(payload.tenant_id) if payload.tenant_id is not None else None
        api_key = key_get(payload.key_id) if payload.key_id is not None else None
        budget = budget_set(
            tenant=tenant,
            api_key=api_key,
            period=payload.period,
            limit_usd=payload.limit_usd,
            soft_limit_percent=payload.soft_limit_percent,
        )
        write.record("budget.set", budget, payload.dict())
    budget.refresh_from_db()  # amounts as stored, with their nine decimals
    return budget


@router.delete("/budgets/{budget_id}", response=BudgetOut)
def budgets_delete(request: HttpRequest, budget_id: int) -> Budget:
    """Stop enforcing a budget. The row and its spend per period stay, for the books."""
    with audited_write(request) as write:
        budget = Budget.objects.filter(pk=budget_id).first()
        if budget is None:
            raise not_found("budget", budget_id)
        if budget.is_active:
            budget.is_active = False
            budget.save(update_fields=["is_active", "updated_at"])  # post_save: every process reloads
            write.record("budget.delete", budget, {"is_active": [True, False]})
    return budget
