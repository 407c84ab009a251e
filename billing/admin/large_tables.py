"""Changelists over tables of millions of rows, with nothing that scans them: a
capped count (or PostgreSQL's own estimate for a whole table), date links from
MIN/MAX, filters whose choices come from small tables, exact searches on indexes.
"""

import datetime as dt
from typing import Any

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Max, Min, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.functional import cached_property

from accounts.keys import KEY_PREFIX
from accounts.models import Tenant
from billing.models import Price

# Changelists of the big tables count at most this many matching rows: past
# it, staff narrow the list with filters or the date links, not page 10,000.
COUNT_CAP = 10_000


class LargeTablePaginator(Paginator):
    """A paginator that never counts a whole big table.

    Unfiltered on PostgreSQL, the count is the planner's estimate
    (pg_class.reltuples, kept by autovacuum) once that passes COUNT_CAP.
    Otherwise it counts the matching rows up to COUNT_CAP, which costs at
    most COUNT_CAP index entries whatever the table's size.
    """

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not queryset.query.where:
            estimate = table_row_estimate(queryset.db, queryset.model._meta.db_table)
            if estimate is not None and estimate >= COUNT_CAP:
                return estimate
        return queryset.order_by().values("pk")[:COUNT_CAP].count()


def table_row_estimate(alias: str, table: str) -> int | None:
    """PostgreSQL's estimate of a table's rows; None elsewhere or before the first ANALYZE."""
    connection = connections[alias]
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [table])
        row = cursor.fetchone()
    return int(row[0]) if row and row[0] >= 0 else None


class RangeDates:
    """Stands in for a changelist's queryset in Django's date_hierarchy tag.

    The tag offers the years, months or days that have rows, found with
    SELECT DISTINCT date_trunc(...) over every matching row: a full scan of
    a big ledger on every page view. This offers every year, month or day
    between the first and the last matching row instead, found with
    MIN/MAX, which an index on the date answers at once. A day without
    rows then shows an empty list; nothing is hidden.
    """

    def __init__(self, queryset: QuerySet[Any]) -> None:
        self.queryset = queryset

    def aggregate(self, **aggregates: Any) -> dict[str, Any]:
        return self.queryset.aggregate(**aggregates)

    def datetimes(self, field: str, kind: str) -> list[dt.datetime]:
        span = self.queryset.aggregate(first=Min(field), last=Max(field))
        if span["first"] is None:
            return []
        return calendar_steps(timezone.localtime(span["first"]), timezone.localtime(span["last"]), kind)

    dates = datetimes


def calendar_steps(first: dt.datetime, last: dt.datetime, kind: str) -> list[dt.datetime]:
    """The start of every year, month or day from `first`'s to `last`'s."""
    start = first.replace(hour=0, minute=0, second=0, microsecond=0)
    if kind in ("month", "year"):
        start = start.replace(day=1)
    if kind == "year":
        start = start.replace(month=1)
    steps = []
    while start <= last:
        steps.append(start)
        if kind == "day":
            start = start + dt.timedelta(days=1)  # tz-aware UTC, so no DST surprises
        elif kind == "month":
            start = start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
        else:
            start = start.replace(year=start.year + 1)
    return steps


class RangeDatesChangeList:
    """The changelist as the date_hierarchy tag sees it, with RangeDates for its queryset."""

    def __init__(self, changelist: ChangeList) -> None:
        self._changelist = changelist
        self.queryset = RangeDates(changelist.queryset)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._changelist, name)


class ProviderFilter(admin.SimpleListFilter):
    """Choices from the providers table, not SELECT DISTINCT over the ledger."""

    title = "provider"
    parameter_name = "provider"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        providers = Price._meta.get_field("provider").related_model  # proxy.Provider, named by string
        return [(name, name) for name in providers.objects.order_by("name").values_list("name", flat=True)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(provider=self.value()) if self.value() else queryset


def exact_search(queryset: QuerySet[Any], term: str) -> QuerySet[Any]:
    """Exact matches only, each on an indexed column where it can be."""
    if term.startswith("req_"):
        return queryset.filter(request_id=term) if hasattr(queryset.model, "request_id") else queryset.none()
    if term.startswith(KEY_PREFIX):
        return queryset.filter(api_key__prefix=term)
    # The tenant first, by id: "slug OR model" across a join would defeat
    # the (tenant, created_at) index and scan the ledger.
    tenant_id = Tenant.objects.filter(slug=term).values_list("pk", flat=True).first()
    return queryset.filter(tenant_id=tenant_id) if tenant_id is not None else queryset.filter(public_model=term)


class ExactSearchMixin(admin.ModelAdmin):
    search_fields = ["public_model"]  # shows the box; the lookup is exact_search
    search_help_text = "An exact request id, key prefix, tenant slug or model name."

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        term = search_term.strip()
        return (exact_search(queryset, term) if term else queryset), False
