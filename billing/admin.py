"""The billing admin: prices, the usage ledger and its rollups, budgets,
prepaid credit, and the books' checks.

Built for a ledger of millions of rows: no full counts (a capped count, or
PostgreSQL's own estimate for a whole table), joins chosen up front, filters that do not scan the ledger to list their choices, exact
searches that use indexes, and CSV exports that stream rather than load.
Money is shown and exported as exact USD strings with nine decimals.
"""

import csv
import datetime as dt
import functools
import itertools
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.core.handlers.asgi import ASGIRequest
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Count, Exists, IntegerField, Max, Min, OuterRef, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.template import engines
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html

from accounts.admin_filters import TenantFilter, tenant_filter
from accounts.keys import KEY_PREFIX
from accounts.models import Tenant
from billing.dashboard import budgets_with_current_spend
from billing.models import (
    Budget,
    BudgetSpend,
    CreditEntry,
    Price,
    PriceSyncRun,
    ReconciliationReport,
    UsageRecord,
    UsageRollup,
)
from billing.pricing import usd_string
from billing.services import budget_set, credit_add, credit_balance_nanos
from billing.usage_filters import UsageExplorerFilter
from gateway.kernel.admin import ReadOnlyAdmin

CSV_CHUNK_ROWS = 2000
# Changelists of the big tables count at most this many matching rows: past
# it, staff narrow the list with filters or the date links, not page 10,000.
COUNT_CAP = 10_000

# --- Paging without COUNT(*) -----------------------------------------------------


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


# --- CSV export ------------------------------------------------------------------


def _text(value: Any) -> Any:
    """Text as is, except that a spreadsheet must not run it as a formula:
    model names and error codes can come from clients or upstreams."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _when(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat()


@dataclass(frozen=True, slots=True)
class CsvColumn:
    header: str
    lookup: str  # what values_list() fetches
    render: Callable[[Any], Any] = _text


class _Echo:
    """csv.writer writes each row into this, which hands the line back."""

    def write(self, line: str) -> str:
        return line


def csv_lines(columns: Iterable[CsvColumn], rows: Iterable[tuple[Any, ...]]) -> Iterator[str]:
    columns = tuple(columns)
    writer = csv.writer(_Echo())
    yield writer.writerow([column.header for column in columns])
    for row in rows:
        yield writer.writerow([column.render(value) for column, value in zip(columns, row, strict=True)])


async def _in_chunks(lines: Iterator[str]) -> AsyncIterator[str]:
    """Under ASGI Django would buffer a sync iterator whole; this pulls the
    rows a chunk at a time, always in the same worker thread (so on the
    same database connection as the query's cursor)."""

    def take() -> str:
        return "".join(itertools.islice(lines, CSV_CHUNK_ROWS))

    while chunk := await sync_to_async(take, thread_sensitive=True)():
        yield chunk


def csv_response(
    request: HttpRequest, queryset: QuerySet[Any], columns: tuple[CsvColumn, ...], name: str
) -> StreamingHttpResponse:
    rows = queryset.values_list(*(column.lookup for column in columns)).iterator(chunk_size=CSV_CHUNK_ROWS)
    lines = csv_lines(columns, rows)
    content = _in_chunks(lines) if isinstance(request, ASGIRequest) else lines
    response = StreamingHttpResponse(content, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}-{timezone.now():%Y%m%d-%H%M%S}.csv"'
    return response


class _FilterOnlyChangeList(ChangeList):
    """The changelist's filters, search and ordering without its page query and counts."""

    def get_results(self, request: HttpRequest) -> None:
        pass


@functools.cache
def _changelist_with_export_button() -> Any:
    # Built from a string, not a template file, so the button lives with the
    # view it calls; `cl.get_query_string` carries the current filters over.
    # `range_dates_cl`, when given, draws the date links (see RangeDates).
    return engines["django"].from_string(
        '{% extends "admin/change_list.html" %}{% load admin_urls admin_list %}'
        "{% block object-tools-items %}"
        '<li><a href="{% url cl.opts|admin_urlname:"export_csv" %}{{ cl.get_query_string }}">Export CSV</a></li>'
        "{{ block.super }}{% endblock %}"
        "{% block date_hierarchy %}{% if range_dates_cl %}{% date_hierarchy range_dates_cl %}"
        "{% else %}{{ block.super }}{% endif %}{% endblock %}"
    )


# --- Date links without SELECT DISTINCT ----------------------------------------------------


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


class _RangeDatesChangeList:
    """The changelist as the date_hierarchy tag sees it, with RangeDates for its queryset."""

    def __init__(self, changelist: ChangeList) -> None:
        self._changelist = changelist
        self.queryset = RangeDates(changelist.queryset)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._changelist, name)


class CsvExportAdmin(admin.ModelAdmin):
    """An "Export CSV" button (every row the current filters select) and
    action (the rows ticked) on the changelist."""

    csv_columns: tuple[CsvColumn, ...] = ()
    csv_name = "export"
    actions = ["export_csv"]

    def get_urls(self) -> list[URLPattern]:
        name = f"{self.opts.app_label}_{self.opts.model_name}_export_csv"
        return [path("export.csv", self.admin_site.admin_view(self.export_csv_view), name=name), *super().get_urls()]

    def export_csv_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            return HttpResponseBadRequest("Unknown filter in the address.")
        return csv_response(request, changelist.queryset, self.csv_columns, self.csv_name)

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        match = request.resolver_match
        if match is not None and match.url_name and match.url_name.endswith("_export_csv"):
            return _FilterOnlyChangeList
        return super().get_changelist(request, **kwargs)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        if isinstance(response, TemplateResponse):
            response.template_name = _changelist_with_export_button()
            changelist = (response.context_data or {}).get("cl")
            if changelist is not None and changelist.date_hierarchy:
                response.context_data["range_dates_cl"] = _RangeDatesChangeList(changelist)  # type: ignore[index]
        return response

    @admin.action(description="Export selected as CSV", permissions=["view"])
    def export_csv(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse:
        return csv_response(request, queryset, self.csv_columns, self.csv_name)


# --- Filters that never scan the ledger for their choices ----------------------------


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


# --- Prices ----------------------------------------------------------------------


_SOURCE_BADGE_STYLE = {
    Price.Source.MANUAL: "background:#E69F00;color:#000",
    Price.Source.SYNC: "background:#0072B2;color:#fff",
}


@admin.register(Price)
class PriceAdmin(admin.ModelAdmin):
    list_display = [
        "model",
        "provider",
        "input_usd_per_mtok",
        "cached_input_usd_per_mtok",
        "output_usd_per_mtok",
        "effective_from",
        "in_force",
        "source_badge",
        "history",
    ]
    list_filter = ["source", "provider", "effective_from"]
    list_select_related = ["provider"]
    search_fields = ["model"]
    search_help_text = "A model name: its rows, newest first, are its price history."
    date_hierarchy = "effective_from"
    autocomplete_fields = ["provider"]
    readonly_fields = ["created_at", "history"]
    fieldsets = [
        (
            None,
            {
                "description": (
                    "To change a price, add a row with a later 'effective from' instead of editing this one: "
                    "past usage stays priced at the rate that applied then. Rows whose source is 'Price sync' "
                    "are written by the nightly sync, which may add newer rows for the same model."
                ),
                "fields": ["model", "provider", "effective_from", "source", "created_at", "history"],
            },
        ),
        (
            "Rates, USD per million tokens",
            {
                "fields": [
                    "input_usd_per_mtok",
                    "cached_input_usd_per_mtok",
                    "cache_write_5m_usd_per_mtok",
                    "cache_write_1h_usd_per_mtok",
                    "output_usd_per_mtok",
                    "reasoning_usd_per_mtok",
                    "audio_input_usd_per_mtok",
                    "audio_output_usd_per_mtok",
                    "image_input_usd_per_mtok",
                    "image_output_usd_per_mtok",
                    "input_usd_per_second",
                    "input_usd_per_character",
                    "output_usd_per_image",
                    "request_fee_usd",
                    "max_output_tokens",
                ]
            },
        ),
        (
            "Long context",
            {
                "classes": ["collapse"],
                "fields": [
                    "long_context_threshold",
                    "long_input_usd_per_mtok",
                    "long_cached_input_usd_per_mtok",
                    "long_cache_write_5m_usd_per_mtok",
                    "long_cache_write_1h_usd_per_mtok",
                    "long_output_usd_per_mtok",
                ],
            },
        ),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Price]:
        # Both from the (model, effective_from) index, per row of the page.
        same_model = Price.objects.filter(model=OuterRef("model")).order_by()
        rows = same_model.values("model").annotate(n=Count("pk")).values("n")
        # Coalesce: "any provider" is NULL, and NULL never equals NULL.
        newer_in_force = same_model.alias(owner=Coalesce("provider_id", 0)).filter(
            owner=Coalesce(OuterRef("provider_id"), 0),
            effective_from__gt=OuterRef("effective_from"),
            effective_from__lte=timezone.now(),
        )
        return (
            super()
            .get_queryset(request)
            .annotate(
                history_rows=Subquery(rows, output_field=IntegerField()),
                superseded=Exists(newer_in_force),
            )
        )

    @admin.display(description="in force", boolean=True)
    def in_force(self, obj: Price) -> bool:
        """The row that prices new requests now: started, and no later row has."""
        return obj.effective_from <= timezone.now() and not getattr(obj, "superseded", False)

    @admin.display(description="source", ordering="source")
    def source_badge(self, obj: Price) -> str:
        return format_html(
            '<span style="{};padding:1px 6px;border-radius:8px;font-size:11px;white-space:nowrap">{}</span>',
            _SOURCE_BADGE_STYLE.get(obj.source, ""),
            obj.get_source_display(),
        )

    @admin.display(description="history")
    def history(self, obj: Price) -> str:
        if obj.pk is None:
            return "-"
        url = reverse("admin:billing_price_changelist") + "?" + urllib.parse.urlencode({"model": obj.model})
        rows = getattr(obj, "history_rows", None) or Price.objects.filter(model=obj.model).count()
        return format_html('<a href="{}">all {} rows of {}</a>', url, rows, obj.model)


# --- The usage ledger and its rollups ----------------------------------------------


# The columns a usage record and a rollup row share, in the same order in both exports.
TOKEN_AND_MONEY_COLUMNS = (
    CsvColumn("input_tokens", "input_tokens"),
    CsvColumn("cached_input_tokens", "cached_input_tokens"),
    CsvColumn("cache_write_5m_tokens", "cache_write_5m_tokens"),
    CsvColumn("cache_write_1h_tokens", "cache_write_1h_tokens"),
    CsvColumn("output_tokens", "output_tokens"),
    CsvColumn("reasoning_tokens", "reasoning_tokens"),
    CsvColumn("cost_usd", "cost_nanos", usd_string),
    CsvColumn("saved_usd", "saved_nanos", usd_string),
)


@admin.register(UsageRecord)
class UsageRecordAdmin(ExactSearchMixin, CsvExportAdmin, ReadOnlyAdmin):
    # What staff read in a list, fitting a laptop's width; every other field
    # is on the record's page (and in the CSV export).
    list_display = ["time", "tenant", "key", "asked_model", "status", "tokens", "cost", "latency", "cache"]
    list_filter = [
        UsageExplorerFilter,
        ProviderFilter,
        "stream",
        "cache_hit",
        "usage_estimated",
        "client_disconnected",
        "prepaid",
        "rolled_up",
    ]
    list_select_related = ["tenant", "api_key"]
    date_hierarchy = "created_at"
    show_full_result_count = False  # COUNT(*) over the whole ledger is slow
    paginator = LargeTablePaginator
    csv_name = "usage-records"
    csv_columns = (
        CsvColumn("created_at", "created_at", _when),
        CsvColumn("request_id", "request_id"),
        CsvColumn("tenant", "tenant__slug"),
        CsvColumn("key_prefix", "api_key__prefix"),
        CsvColumn("key_name", "api_key__name"),
        CsvColumn("endpoint", "endpoint"),
        CsvColumn("model", "public_model"),
        CsvColumn("upstream_model", "upstream_model"),
        CsvColumn("provider", "provider"),
        CsvColumn("status_code", "status_code"),
        CsvColumn("error_code", "error_code"),
        CsvColumn("stream", "stream"),
        CsvColumn("cache_hit", "cache_hit"),
        CsvColumn("usage_estimated", "usage_estimated"),
        CsvColumn("client_disconnected", "client_disconnected"),
        *TOKEN_AND_MONEY_COLUMNS,
        CsvColumn("prepaid", "prepaid"),
        CsvColumn("latency_ms", "latency_ms"),
        CsvColumn("ttft_ms", "ttft_ms"),
    )

    readonly_fields = ["created", "trace"]

    class Media:
        css = {"all": ["billing/usage_list.css"]}

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        """The record's page: the time to the millisecond first, then the trace, when staff may read traces."""
        shown = ["created", "trace"] if request.user.has_perm("accounts.view_requesttrace") else ["created"]
        return [*shown, *(f for f in super().get_fields(request, obj) if f not in ("created_at", "created", "trace"))]

    @admin.display(description="time UTC", ordering="created_at")
    def time(self, obj: UsageRecord) -> str:
        return f"{obj.created_at.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S}"

    @admin.display(description="created (UTC)")
    def created(self, obj: UsageRecord) -> str:
        return obj.created_at.astimezone(dt.UTC).isoformat(sep=" ", timespec="milliseconds")

    @admin.display(description="key", ordering="api_key__prefix")
    def key(self, obj: UsageRecord) -> str:
        return obj.api_key.prefix

    @admin.display(description="model", ordering="public_model")
    def asked_model(self, obj: UsageRecord) -> str:  # "model" is the ModelAdmin's own attribute
        return obj.public_model

    @admin.display(description="status", ordering="status_code")
    def status(self, obj: UsageRecord) -> str:
        return format_html('<span title="{}">{}</span>', obj.error_code, obj.status_code)

    @admin.display(description="tokens in/out")
    def tokens(self, obj: UsageRecord) -> str:
        read = (
            obj.input_tokens
            + obj.cached_input_tokens
            + obj.cache_write_5m_tokens
            + obj.cache_write_1h_tokens
            + obj.audio_input_tokens
        )
        written = obj.output_tokens + obj.reasoning_tokens + obj.audio_output_tokens
        return f"{read:,} / {written:,}"

    @admin.display(description="cost USD", ordering="cost_nanos")
    def cost(self, obj: UsageRecord) -> str:
        return usd_string(obj.cost_nanos)

    @admin.display(description="latency", ordering="latency_ms")
    def latency(self, obj: UsageRecord) -> str:
        return f"{obj.latency_ms:,} ms"

    @admin.display(description="cache", ordering="cache_status")
    def cache(self, obj: UsageRecord) -> str:
        return "hit" if obj.cache_hit else obj.cache_status or "-"

    @admin.display(description="trace")
    def trace(self, obj: UsageRecord) -> str:
        if obj.pk is None:
            return "-"
        url = reverse("gateway_request_trace", args=[obj.request_id])
        return format_html('<a href="{}" id="usage-trace-link">Prompt and answer, side by side</a>', url)


@admin.register(UsageRollup)
class UsageRollupAdmin(ExactSearchMixin, CsvExportAdmin, ReadOnlyAdmin):
    list_display = [
        "bucket_start",
        "granularity",
        "tenant",
        "key",
        "public_model",
        "provider",
        "requests",
        "errors",
        "input_tokens",
        "cached_input_tokens",
        "output_tokens",
        "cost",
        "saved",
    ]
    list_filter = ["granularity", TenantFilter, ProviderFilter]
    list_select_related = ["tenant", "api_key"]
    date_hierarchy = "bucket_start"
    show_full_result_count = False
    paginator = LargeTablePaginator
    csv_name = "usage-rollups"
    csv_columns = (
        CsvColumn("granularity", "granularity"),
        CsvColumn("bucket_start", "bucket_start", _when),
        CsvColumn("tenant", "tenant__slug"),
        CsvColumn("key_prefix", "api_key__prefix"),
        CsvColumn("key_name", "api_key__name"),
        CsvColumn("model", "public_model"),
        CsvColumn("provider", "provider"),
        CsvColumn("requests", "requests"),
        CsvColumn("errors", "errors"),
        CsvColumn("cache_hits", "cache_hits"),
        *TOKEN_AND_MONEY_COLUMNS,
        CsvColumn("prepaid_cost_usd", "prepaid_cost_nanos", usd_string),
    )

    @admin.display(description="key", ordering="api_key__prefix")
    def key(self, obj: UsageRollup) -> str:
        return obj.api_key.prefix

    @admin.display(description="cost (USD)", ordering="cost_nanos")
    def cost(self, obj: UsageRollup) -> str:
        return usd_string(obj.cost_nanos)

    @admin.display(description="saved (USD)", ordering="saved_nanos")
    def saved(self, obj: UsageRollup) -> str:
        return usd_string(obj.saved_nanos)


# --- Budgets -----------------------------------------------------------------------


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


# --- Prepaid credit ------------------------------------------------------------------


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


# --- The books' own records ------------------------------------------------------------


@admin.register(PriceSyncRun)
class PriceSyncRunAdmin(ReadOnlyAdmin):
    list_display = ["started_at", "ok", "added", "changed", "unchanged", "skipped", "source", "error"]
    list_filter = ["ok"]
    date_hierarchy = "started_at"


@admin.register(ReconciliationReport)
class ReconciliationReportAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "ok", "difference_count", "checked"]
    list_filter = ["ok"]
    date_hierarchy = "created_at"

    @admin.display(description="differences")
    def difference_count(self, obj: ReconciliationReport) -> int:
        return len(obj.differences)


# --- Webhooks and their deliveries (billing.webhook_admin) ------------------------------

from billing import webhook_admin  # noqa: E402, F401  (registers its pages)
