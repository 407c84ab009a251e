"""Budgets in the admin, added through budget_set; and the inlines that show a
tenant's or key's budgets on its own page (gateway.admin).
"""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from accounts.admin_filters import tenant_filter
from billing.dashboard import budgets_with_current_spend
from billing.models import Budget, BudgetSpend
from billing.pricing import usd_string
from billing.services import budget_set


class BudgetForm(forms.ModelForm):
    class Meta:
        model = Budget
        fields = ["tenant", "api_key", "period", "limit_usd", "soft_limit_percent", "is_active"]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if self.instance.pk is None and bool(data.get("tenant")) == bool(data.get("api_key")):
            # On a field, so the model's generic constraint message is not added as well.
            self.add_error("tenant", "A budget belongs to a tenant or to one key: choose exactly one.")
        return data


class BudgetSpendInline(admin.TabularInline):
    model = BudgetSpend
    fields = ["period_start", "spent", "soft_alerted_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = "spend per period"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # spend is the meter's to write

    @admin.display(description="spent (USD)")
    def spent(self, obj: BudgetSpend) -> str:
        return usd_string(obj.spent_nanos)


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin):
    form = BudgetForm
    list_display = ["__str__", "period", "limit_usd", "soft_limit_percent", "spent_this_period", "is_active"]
    list_filter = ["period", "is_active", tenant_filter("tenant_id", "api_key__tenant_id")]
    list_select_related = ["tenant", "api_key"]
    search_fields = ["tenant__slug", "api_key__prefix", "api_key__name"]
    autocomplete_fields = ["tenant", "api_key"]
    inlines = [BudgetSpendInline]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # Another owner or period is another budget, with other spend rows.
        return ["tenant", "api_key", "period", "created_at"] if obj is not None else []

    def get_queryset(self, request: HttpRequest) -> QuerySet[Budget]:
        return budgets_with_current_spend(super().get_queryset(request), timezone.now())

    @admin.display(description="spent this period (USD)")
    def spent_this_period(self, obj: Budget) -> str:
        return usd_string(getattr(obj, "spent_now_nanos", None) or 0)

    def save_model(self, request: HttpRequest, obj: Budget, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        # The service counts what the owner already spent this period.
        existed = Budget.objects.filter(tenant=obj.tenant, api_key=obj.api_key, period=obj.period).exists()
        budget = budget_set(
            limit_usd=obj.limit_usd,
            period=obj.period,
            tenant=obj.tenant,
            api_key=obj.api_key,
            soft_limit_percent=obj.soft_limit_percent,
        )
        if not obj.is_active:
            budget.is_active = False
            budget.save(update_fields=["is_active", "updated_at"])
        obj.pk, obj.created_at, obj.updated_at = budget.pk, budget.created_at, budget.updated_at
        obj.is_active = budget.is_active
        obj._state.adding = False
        if existed:
            messages.info(request, f"This owner already had a {obj.period} budget: its limit was changed instead.")


class OwnedBudgetInline(admin.TabularInline):
    """The budgets of a tenant or key, with this period's spend. Read-only:
    budgets are added and changed on their own page, through budget_set,
    which counts what the owner already spent this period."""

    model = Budget
    fields = ["period", "limit_usd", "soft_limit_percent", "spent_this_period", "is_active"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Budget]:
        return budgets_with_current_spend(super().get_queryset(request), timezone.now())

    @admin.display(description="spent this period (USD)")
    def spent_this_period(self, obj: Budget) -> str:
        return usd_string(getattr(obj, "spent_now_nanos", None) or 0)


class TenantBudgetInline(OwnedBudgetInline):
    fk_name = "tenant"


class KeyBudgetInline(OwnedBudgetInline):
    fk_name = "api_key"
