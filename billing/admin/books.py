"""The books' own records in the admin: price sync runs and reconciliation reports."""

from django.contrib import admin

from billing.models import PriceSyncRun, ReconciliationReport
from gateway.kernel.admin import ReadOnlyAdmin


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
