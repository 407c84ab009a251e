"""The operations dashboard in the admin: a page and its JSON, staff only.

Mounted under /admin/dashboard/ by gateway.urls. The page renders the
alerts and every chart's numbers as tables (what shows without
JavaScript); billing/static/billing/dashboard.js draws the charts from
the JSON endpoint and opens the live feed.
"""

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, JsonResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse

from accounts.models import Tenant
from billing.alerts import alerts_current
from billing.dashboard import PERIOD_DAYS, dashboard_data
from billing.pricing import usd_string

DEFAULT_DAYS = PERIOD_DAYS[0]


def requested_days(request: HttpRequest) -> int:
    """?days=7|30|90; anything else is the default."""
    try:
        days = int(request.GET.get("days", DEFAULT_DAYS))
    except ValueError:
        return DEFAULT_DAYS
    return days if days in PERIOD_DAYS else DEFAULT_DAYS


class UnknownTenantError(Exception):
    """?tenant= names no tenant: said so, never widened to every tenant's numbers."""

    def __init__(self, slug: str) -> None:
        super().__init__(slug)
        self.slug = slug


def requested_tenant(request: HttpRequest) -> Tenant | None:
    """?tenant=<slug>: one tenant's dashboard; none: every tenant. Raises UnknownTenantError."""
    slug = request.GET.get("tenant", "").strip()
    if not slug:
        return None
    tenant = Tenant.objects.filter(slug=slug).first()
    if tenant is None:
        raise UnknownTenantError(slug)
    return tenant


def _may_see_rollups(request: HttpRequest) -> None:
    """The charts are the rollups of usage: shown to staff who may read those."""
    if not request.user.has_perm("billing.view_usagerollup"):
        raise PermissionDenied


def dashboard_view(request: HttpRequest) -> TemplateResponse:
    _may_see_rollups(request)
    days = requested_days(request)
    context = {
        **admin.site.each_context(request),
        "title": "Operations dashboard",
        "days": days,
        "period_choices": PERIOD_DAYS,
        "tenant_choices": Tenant.objects.order_by("slug").values_list("slug", flat=True),
    }
    try:
        tenant = requested_tenant(request)
    except UnknownTenantError as unknown:
        context["unknown_tenant"] = unknown.slug
        return TemplateResponse(request, "admin/dashboard.html", context, status=404)
    data = dashboard_data(days, tenant_id=tenant.pk if tenant else None)
    may_see_usage = request.user.has_perm("billing.view_usagerecord")
    context |= {
        "tenant": tenant,
        "alerts": alerts_current(),
        "rolled_up_until": data["rolled_up_until"],
        "tables": fallback_tables(data),
        "data_url": reverse("gateway_dashboard_data"),
        # Bars and feed rows link to their records only for staff who may read them.
        "usage_url": reverse("admin:billing_usagerecord_changelist") if may_see_usage else "",
    }
    return TemplateResponse(request, "admin/dashboard.html", context)


def dashboard_data_view(request: HttpRequest) -> JsonResponse:
    _may_see_rollups(request)
    try:
        tenant = requested_tenant(request)
    except UnknownTenantError as unknown:
        return JsonResponse({"error": f"unknown tenant {unknown.slug!r}", "code": "unknown_tenant"}, status=404)
    return JsonResponse(dashboard_data(requested_days(request), tenant_id=tenant.pk if tenant else None))


# --- Tables: the charts' numbers, for reading and without JavaScript ----------------------


@dataclass(frozen=True, slots=True)
class Table:
    chart: str  # the id of the chart it stands for
    caption: str
    headers: list[str]
    rows: list[list[str]]


def fallback_tables(data: dict[str, Any]) -> dict[str, Table]:
    traffic = data["traffic"]
    hourly = traffic["granularity"] == "hour"
    when = [_label(label, hourly) for label in traffic["labels"]]
    return {
        "spend_by_tenant": _stacked_table("spend_by_tenant", "Spend per day by tenant (USD)", data["spend_by_tenant"]),
        "spend_by_model": _stacked_table("spend_by_model", "Spend per day by model (USD)", data["spend_by_model"]),
        "requests": Table(
            "requests",
            "Requests and errors",
            ["bucket", "requests", "errors", "error rate"],
            [
                [w, str(r), str(e), _percent(rate)]
                for w, r, e, rate in zip(
                    when, traffic["requests"], traffic["errors"], traffic["error_rate"], strict=True
                )
            ],
        ),
        "latency": Table(
            "latency",
            "Latency and time to first token (ms)",
            ["bucket", "p50", "p95", "TTFT p50", "TTFT p95"],
            [
                [w, *(_number(v) for v in values)]
                for w, *values in zip(
                    when,
                    traffic["latency_p50_ms"],
                    traffic["latency_p95_ms"],
                    traffic["ttft_p50_ms"],
                    traffic["ttft_p95_ms"],
                    strict=True,
                )
            ],
        ),
        "cache": Table(
            "cache",
            "Response cache",
            ["bucket", "hits", "hit rate", "saved (USD)"],
            [
                [w, str(h), _percent(rate), usd_string(saved)]
                for w, h, rate, saved in zip(
                    when, traffic["cache_hits"], traffic["cache_hit_rate"], traffic["saved_nanos"], strict=True
                )
            ],
        ),
        "budgets": Table(
            "budgets",
            "Budgets this period (USD)",
            ["owner", "period", "spent", "limit", "projected", "used"],
            [
                [
                    b["owner"],
                    b["period"],
                    usd_string(b["spent_nanos"]),
                    usd_string(b["limit_nanos"]),
                    usd_string(b["projected_nanos"]) if b["projected_nanos"] is not None else "-",
                    f"{b['used_per_mille'] / 10:.1f}%",
                ]
                for b in data["budgets"]
            ],
        ),
    }


def _stacked_table(chart: str, caption: str, stacked: dict[str, Any]) -> Table:
    names = [series["name"] for series in stacked["series"]]
    rows = [
        [_label(label, hourly=False), *(usd_string(series["values"][i]) for series in stacked["series"])]
        for i, label in enumerate(stacked["labels"])
    ]
    return Table(chart, caption, ["day", *names], rows)


def _label(iso: str, hourly: bool) -> str:
    when = dt.datetime.fromisoformat(iso).astimezone(dt.UTC)
    return f"{when:%Y-%m-%d %H:00}" if hourly else f"{when:%Y-%m-%d}"


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def _number(value: int | None) -> str:
    return "-" if value is None else str(value)


urlpatterns = [
    path("", admin.site.admin_view(dashboard_view), name="gateway_dashboard"),
    path("data.json", admin.site.admin_view(dashboard_data_view), name="gateway_dashboard_data"),
]
