"""Prepaid credit in the admin: an append-only ledger of top-ups, refunds and adjustments."""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import OuterRef, QuerySet, Subquery, Sum
from django.http import HttpRequest

from accounts.admin_filters import TenantFilter
from billing.admin.large_tables import LargeTablePaginator
from billing.models import CreditEntry
from billing.pricing import usd_string
from billing.services import credit_add, credit_balance_nanos


class CreditEntryAddForm(forms.ModelForm):
    kind = forms.ChoiceField(choices=[c for c in CreditEntry.Kind.choices if c[0] != CreditEntry.Kind.USAGE])
    amount_usd = forms.DecimalField(
        max_digits=18, decimal_places=9, label="Amount (USD)", help_text="Adjustments may be negative."
    )

    class Meta:
        model = CreditEntry
        fields = ["tenant", "kind", "amount_usd", "note"]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        amount = data.get("amount_usd")
        # The service's rules, checked here so that staff see a form error rather than a crash.
        if amount is None:
            return data
        if data.get("kind") in (CreditEntry.Kind.TOPUP, CreditEntry.Kind.REFUND) and amount <= 0:
            self.add_error("amount_usd", "A top-up or refund must be a positive amount.")
        elif amount == 0:
            self.add_error("amount_usd", "An entry of zero changes nothing.")
        return data


@admin.register(CreditEntry)
class CreditEntryAdmin(admin.ModelAdmin):
    """Staff add top-ups, refunds and adjustments; the ledger is append-only,
    so a mistake is corrected with an adjustment, never by editing."""

    list_display = ["created_at", "tenant", "kind", "amount", "note", "tenant_balance"]
    list_filter = ["kind", TenantFilter]
    list_select_related = ["tenant"]
    search_fields = ["tenant__slug", "note"]
    autocomplete_fields = ["tenant"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    paginator = LargeTablePaginator
    readonly_fields = ["tenant", "kind", "amount", "note", "created_at", "tenant_balance"]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = CreditEntryAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return CreditEntryAddForm.Meta.fields if obj is None else self.readonly_fields

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [] if obj is None else self.readonly_fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[CreditEntry]:
        balance = (
            CreditEntry.objects.filter(tenant=OuterRef("tenant"))
            .order_by()
            .values("tenant")
            .annotate(total=Sum("amount_nanos"))
            .values("total")
        )
        return super().get_queryset(request).annotate(balance_nanos=Subquery(balance))

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="amount (USD)", ordering="amount_nanos")
    def amount(self, obj: CreditEntry) -> str:
        return usd_string(obj.amount_nanos)

    @admin.display(description="tenant balance (USD)")
    def tenant_balance(self, obj: CreditEntry) -> str:
        nanos = getattr(obj, "balance_nanos", None)
        return usd_string(credit_balance_nanos(obj.tenant) if nanos is None else nanos)

    def save_model(self, request: HttpRequest, obj: CreditEntry, form: Any, change: bool) -> None:
        # Through the service: it checks the amount and tells every process
        # about the new balance.
        entry = credit_add(tenant=obj.tenant, amount_usd=form.cleaned_data["amount_usd"], kind=obj.kind, note=obj.note)
        obj.pk, obj.amount_nanos, obj.created_at = entry.pk, entry.amount_nanos, entry.created_at
        obj._state.adding = False
        balance = usd_string(credit_balance_nanos(obj.tenant))
        messages.info(request, f"Balance of {obj.tenant} is now {balance} USD.")
