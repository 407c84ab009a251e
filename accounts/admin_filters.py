"""A tenant filter for any changelist whose rows belong to a tenant.

`?tenant=<slug>`, picked from a list of tenants (a datalist, so thousands of
tenants stay one short input). An unknown slug selects no rows and says so,
rather than being ignored, which would show every tenant's rows.
"""

from typing import Any

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest

from accounts.models import Tenant


class TenantFilter(admin.ListFilter):
    title = "tenant"
    template = "admin/tenant_filter.html"
    parameter_name = "tenant"
    # The rows' tenant, by id: "tenant_id", or several paths joined by OR.
    tenant_fields: tuple[str, ...] = ("tenant_id",)

    def __init__(self, request: HttpRequest, params: dict[str, list[str]], model: Any, model_admin: Any) -> None:
        super().__init__(request, params, model, model_admin)
        self.slug = params.pop(self.parameter_name)[-1].strip() if self.parameter_name in params else ""
        self.tenant_id = (
            Tenant.objects.filter(slug=self.slug).values_list("pk", flat=True).first() if self.slug else None
        )
        if self.slug:
            self.used_parameters[self.parameter_name] = self.slug

    @property
    def unknown(self) -> bool:
        return bool(self.slug) and self.tenant_id is None

    def has_output(self) -> bool:
        return True

    def expected_parameters(self) -> list[str | None]:
        return [self.parameter_name]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if not self.slug:
            return queryset
        if self.tenant_id is None:
            return queryset.none()
        match = Q()
        for field in self.tenant_fields:
            match |= Q(**{field: self.tenant_id})
        return queryset.filter(match)

    def choices(self, changelist: Any) -> Any:
        yield {
            "slug": self.slug,
            "unknown": self.unknown,
            "hidden": [
                (name, value)
                for name, values in changelist.filter_params.items()
                if name != self.parameter_name
                for value in values
            ],
            "reset": changelist.get_query_string(remove=[self.parameter_name]),
            "tenants": Tenant.objects.order_by("slug").values_list("slug", flat=True),
        }


def tenant_filter(*fields: str) -> type[TenantFilter]:
    """A TenantFilter on other paths to the tenant, e.g. ("tenant_id", "api_key__tenant_id")."""
    return type("TenantFilter", (TenantFilter,), {"tenant_fields": fields})
