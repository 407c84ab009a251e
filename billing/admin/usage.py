"""The usage ledger and its rollups in the admin: read-only, searched exactly, exported as CSV."""

import datetime as dt
from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from accounts.admin_filters import TenantFilter
from billing.admin.csv_export import CsvColumn, CsvExportAdmin, iso_utc
from billing.admin.large_tables import ExactSearchMixin, LargeTablePaginator, ProviderFilter
from billing.models import UsageRecord, UsageRollup
from billing.pricing import usd_string
from billing.usage_filters import UsageExplorerFilter
from gateway.kernel.admin import ReadOnlyAdmin

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
        CsvColumn("created_at", "created_at", iso_utc),
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
        CsvColumn("bucket_start", "bucket_start", iso_utc),
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
