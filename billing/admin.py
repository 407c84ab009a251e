from django.contrib import admin
from django.http import HttpRequest

from billing.models import Price, UsageRecord


@admin.register(Price)
class PriceAdmin(admin.ModelAdmin):
    list_display = [
        "model", "provider", "input_usd_per_mtok", "cached_input_usd_per_mtok",
        "output_usd_per_mtok", "effective_from", "source",
    ]  # fmt: skip
    list_filter = ["source", "provider"]
    search_fields = ["model"]
    date_hierarchy = "effective_from"


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    list_display = [
        "created_at", "request_id", "tenant", "public_model", "status_code", "input_tokens",
        "cached_input_tokens", "output_tokens", "cost_usd", "latency_ms", "stream", "usage_estimated",
    ]  # fmt: skip
    list_filter = ["status_code", "stream", "usage_estimated", "client_disconnected", "provider"]
    list_select_related = ["tenant"]
    search_fields = ["request_id", "public_model"]
    date_hierarchy = "created_at"
    show_full_result_count = False  # COUNT(*) over the whole ledger is slow

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
