"""The request explorer's filters on the usage list: time window, status,
tenant, key, model, cost range and latency range, as plain query
parameters, so a dashboard bar or a live-feed row links to exactly its
records (`usage_list_url`).

A filter that names something unknown (a tenant slug or key prefix that
does not exist) or that cannot be read selects nothing and says why: it
never quietly falls back to every row. The tenant and key are resolved to
ids first, so the list's query uses the (tenant, created_at) and
(api_key, created_at) indexes.
"""

import datetime as dt
import urllib.parse
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse

from accounts.models import ApiKey, Tenant
from billing.pricing import NANOS_PER_USD

STATUS_CLASSES = {"ok": (0, 400), "failed": (400, 1000), "4xx": (400, 500), "5xx": (500, 600)}


def usage_list_url(**filters: Any) -> str:
    """The usage list with these filters (empty ones left out)."""
    query = urllib.parse.urlencode({name: value for name, value in filters.items() if value not in (None, "")})
    return reverse("admin:billing_usagerecord_changelist") + (f"?{query}" if query else "")


class StatusField(forms.CharField):
    def validate(self, value: Any) -> None:
        super().validate(value)
        if value and value not in STATUS_CLASSES and not (value.isdigit() and 100 <= int(value) <= 599):
            raise forms.ValidationError("A status code (429) or one of ok, failed, 4xx, 5xx.")


class UsageFilterForm(forms.Form):
    since = forms.DateTimeField(required=False, label="From (UTC)", help_text="2025-03-04 10:00")
    until = forms.DateTimeField(required=False, label="Until (UTC)")
    status = StatusField(required=False, max_length=6)
    tenant = forms.SlugField(required=False, max_length=64, label="Tenant (slug)")
    key = forms.CharField(required=False, max_length=16, label="Key (prefix)")
    model = forms.CharField(required=False, max_length=200)
    cost_min = forms.DecimalField(required=False, min_value=Decimal(0), decimal_places=9, label="Cost from (USD)")
    cost_max = forms.DecimalField(required=False, min_value=Decimal(0), decimal_places=9, label="to")
    latency_min = forms.IntegerField(required=False, min_value=0, label="Latency from (ms)")
    latency_max = forms.IntegerField(required=False, min_value=0, label="to")

    def clean_tenant(self) -> int | None:
        slug = self.cleaned_data["tenant"]
        if not slug:
            return None
        tenant_id = Tenant.objects.filter(slug=slug).values_list("pk", flat=True).first()
        if tenant_id is None:
            raise forms.ValidationError(f"Unknown tenant “{slug}”: no records shown.")
        return tenant_id

    def clean_key(self) -> list[int] | None:
        prefix = self.cleaned_data["key"].strip()
        if not prefix:
            return None
        ids = list(ApiKey.objects.filter(prefix=prefix).values_list("pk", flat=True))
        if not ids:
            raise forms.ValidationError(f"Unknown key “{prefix}”: no records shown.")
        return ids


def usage_filtered(queryset: QuerySet[Any], data: dict[str, Any]) -> QuerySet[Any]:
    """`queryset` narrowed by a valid form's cleaned data."""
    lookups: dict[str, Any] = {}
    if data.get("since"):
        lookups["created_at__gte"] = _utc(data["since"])
    if data.get("until"):
        lookups["created_at__lt"] = _utc(data["until"])
    if data.get("tenant") is not None:
        lookups["tenant_id"] = data["tenant"]
    if data.get("key") is not None:
        lookups["api_key_id__in"] = data["key"]
    if data.get("model"):
        lookups["public_model"] = data["model"]
    if status := data.get("status"):
        if status in STATUS_CLASSES:
            lookups["status_code__gte"], lookups["status_code__lt"] = STATUS_CLASSES[status]
        else:
            lookups["status_code"] = int(status)
    if data.get("cost_min") is not None:
        lookups["cost_nanos__gte"] = _nanos(data["cost_min"])
    if data.get("cost_max") is not None:
        lookups["cost_nanos__lte"] = _nanos(data["cost_max"])
    if data.get("latency_min") is not None:
        lookups["latency_ms__gte"] = data["latency_min"]
    if data.get("latency_max") is not None:
        lookups["latency_ms__lte"] = data["latency_max"]
    return queryset.filter(**lookups)


def _utc(when: dt.datetime) -> dt.datetime:
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when


def _nanos(usd: Decimal) -> int:
    return int(usd * NANOS_PER_USD)  # nine decimal places at most (the form's)


class UsageExplorerFilter(admin.ListFilter):
    """The filters above as one form in the changelist's sidebar."""

    title = "request"
    template = "admin/billing/usage_filter.html"
    parameters = tuple(UsageFilterForm.base_fields)

    def __init__(self, request: HttpRequest, params: dict[str, list[str]], model: Any, model_admin: Any) -> None:
        super().__init__(request, params, model, model_admin)
        for name in self.parameters:
            if name in params:
                self.used_parameters[name] = params.pop(name)[-1]
        self.form = UsageFilterForm(self.used_parameters) if self.used_parameters else UsageFilterForm()
        self.valid = not self.used_parameters or self.form.is_valid()

    def has_output(self) -> bool:
        return True

    def expected_parameters(self) -> list[str | None]:
        return list(self.parameters)

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if not self.used_parameters:
            return queryset
        return usage_filtered(queryset, self.form.cleaned_data) if self.valid else queryset.none()

    def choices(self, changelist: Any) -> Any:
        # The form is submitted by GET: the list's other parameters (search,
        # dates, sidebar filters) ride along as hidden fields.
        others = [
            (name, value)
            for name, values in changelist.filter_params.items()
            if name not in self.parameters
            for value in values
        ]
        yield {
            "form": self.form,
            "hidden": others,
            "reset": changelist.get_query_string(remove=self.parameters),
            "active": bool(self.used_parameters),
            "tenants": Tenant.objects.order_by("slug").values_list("slug", flat=True),
            "statuses": [*STATUS_CLASSES, "429", "500", "502", "503"],
        }
