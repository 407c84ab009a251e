"""The response cache in the admin: each tenant's cache (stats and purge,
whichever backend holds it) and the database backend's entries.

Staff see every tenant here. Purges go through the store, so Redis, the
database and every process's LRU forget the entries alike.
"""

from typing import Any

from asgiref.sync import async_to_sync
from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone

from billing.admin.large_tables import LargeTablePaginator
from billing.pricing import usd_string
from cachestore.models import CacheEntryRecord, TenantCache
from cachestore.services import cache_purge, with_cache_usage
from cachestore.store import cache_store

PURGE_PERMISSION = "cachestore.delete_cacheentryrecord"


def _purge_tenants(request: HttpRequest, tenant_ids: list[int]) -> None:
    purged = sum(async_to_sync(cache_purge)(tenant_id) for tenant_id in tenant_ids)
    messages.success(request, f"Purged {purged} cached answers of {len(tenant_ids)} tenants.")


class _Purging(admin.ModelAdmin):
    """Read-only lists whose one action is purging."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # rows go through a purge, never one by one

    def has_purge_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(PURGE_PERMISSION)


class FreshFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("fresh", "Fresh"), ("expired", "Expired (a miss until the expiry task deletes it)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "fresh":
            return queryset.filter(expires_at__gt=timezone.now())
        if self.value() == "expired":
            return queryset.filter(expires_at__lte=timezone.now())
        return queryset


@admin.register(CacheEntryRecord)
class CacheEntryRecordAdmin(_Purging):
    list_display = ["tenant", "model", "endpoint", "size_bytes", "created_at", "expires_at", "fresh"]
    list_filter = [FreshFilter]
    list_select_related = ["tenant"]
    search_fields = ["tenant__slug", "model"]
    search_help_text = "An exact tenant slug or model name."
    ordering = ["-expires_at"]  # the expires_at index serves the page
    show_full_result_count = False  # no COUNT(*) over the whole table
    paginator = LargeTablePaginator  # nor for the page count
    fields = ["tenant", "key", "endpoint", "model", "size_bytes", "created_at", "expires_at"]
    actions = ["purge_selected_tenants"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[CacheEntryRecord]:
        return super().get_queryset(request).defer("payload")  # the answers themselves stay in the database

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(Q(tenant__slug=term) | Q(model=term)), False

    @admin.display(boolean=True)
    def fresh(self, obj: CacheEntryRecord) -> bool:
        return obj.expires_at > timezone.now()

    @admin.action(description="Purge the selected tenants' caches", permissions=["purge"])
    def purge_selected_tenants(self, request: HttpRequest, queryset: QuerySet[CacheEntryRecord]) -> None:
        _purge_tenants(request, sorted(set(queryset.values_list("tenant_id", flat=True))))


@admin.register(TenantCache)
class TenantCacheAdmin(_Purging):
    list_display = ["slug", "entries", "size", "hits", "misses", "saved"]
    search_fields = ["slug"]
    list_per_page = 50  # each row asks the store for its entries
    actions = ["purge_selected", "purge_every_tenant"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[TenantCache]:
        return with_cache_usage(super().get_queryset(request))

    @staticmethod
    def _held(obj: TenantCache) -> dict[str, int]:
        held: dict[str, int] | None = getattr(obj, "_held", None)
        if held is None:
            held = obj._held = async_to_sync(cache_store().stats)(obj.pk)  # type: ignore[attr-defined]  # kept on the row for this page
        return held

    @admin.display(description="entries")
    def entries(self, obj: TenantCache) -> int:
        return self._held(obj)["entries"]

    @admin.display(description="size (bytes)")
    def size(self, obj: TenantCache) -> int:
        return self._held(obj)["size_bytes"]

    @admin.display(description="hits")
    def hits(self, obj: TenantCache) -> int:
        return obj.rolled_hits + obj.raw_hits  # type: ignore[attr-defined]  # annotated by get_queryset

    @admin.display(description="misses (raw usage kept)")
    def misses(self, obj: TenantCache) -> int:
        return obj.misses  # type: ignore[attr-defined]  # annotated by get_queryset

    @admin.display(description="saved (USD)")
    def saved(self, obj: TenantCache) -> str:
        return usd_string(obj.rolled_saved + obj.raw_saved)  # type: ignore[attr-defined]  # annotated by get_queryset

    @admin.action(description="Purge the selected tenants' caches", permissions=["purge"])
    def purge_selected(self, request: HttpRequest, queryset: QuerySet[TenantCache]) -> None:
        _purge_tenants(request, sorted(queryset.values_list("pk", flat=True)))

    @admin.action(description="Purge every tenant's cache (whatever is selected)", permissions=["purge"])
    def purge_every_tenant(self, request: HttpRequest, queryset: QuerySet[TenantCache]) -> None:
        purged = async_to_sync(cache_purge)(None)
        messages.success(request, f"Purged {purged} cached answers of every tenant.")
