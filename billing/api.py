"""GET /v1/usage: a key's view of its tenant's usage and cost, from the daily rollups.

Days are UTC. `start` and `end` take a date (YYYY-MM-DD) or an ISO 8601
datetime and are widened to whole days: `start` falls back to the start of
its day, `end` is exclusive and moves forward to the next midnight unless it
is one. The answer echoes the days it covers. Money is a string with exactly
nine decimals ("0.000013800"): the ledger counts nano-dollars, and a string
cannot lose them to a float. Usage appears once the rollup task (every few
minutes) has counted it.
"""

import datetime as dt
from typing import Any

from asgiref.sync import sync_to_async
from django.db.models import Sum
from django.http import HttpRequest, JsonResponse
from ninja import Router

from billing.models import UsageRollup
from billing.pricing import usd_string
from proxy.auth import ApiKeyAuth
from proxy.context import TenantContext
from proxy.errors import invalid_request

router = Router(auth=ApiKeyAuth(), tags=["Usage"])

DEFAULT_DAYS = 30
# What each `group_by` groups the daily rows by.
_GROUPINGS: dict[str, tuple[str, ...]] = {
    "day": ("bucket_start",),
    "model": ("public_model",),
    "key": ("api_key_id", "api_key__prefix", "api_key__name"),
}
_COUNTS = (
    "requests",
    "errors",
    "cache_hits",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_nanos",
    "saved_nanos",
)


@router.get("/usage", summary="Usage and cost of this key's tenant, per day, model or key")
async def usage(
    request: HttpRequest, start: str | None = None, end: str | None = None, group_by: str = "day"
) -> JsonResponse:
    ctx: TenantContext = request.auth  # type: ignore[attr-defined]
    if group_by not in _GROUPINGS:
        raise invalid_request(f"group_by must be one of {', '.join(sorted(_GROUPINGS))}.", param="group_by")
    first_day, end_day = days_requested(start, end, today=dt.datetime.now(dt.UTC).date())
    rows = await sync_to_async(_usage_rows)(ctx.tenant_id, first_day, end_day, group_by)
    data = [{**_label(group_by, row), **_amounts(row)} for row in rows]
    totals = {name: sum(row[name] or 0 for row in rows) for name in _COUNTS}
    return JsonResponse(
        {
            "object": "usage",
            "tenant": ctx.tenant_slug,
            "start": first_day.isoformat(),
            "end": end_day.isoformat(),
            "group_by": group_by,
            "data": data,
            "total": _amounts(totals),
        }
    )


def days_requested(start: str | None, end: str | None, *, today: dt.date) -> tuple[dt.date, dt.date]:
    """The first day and the (exclusive) end day asked for; by default the last 30 days, today included."""
    end_day = _day_boundary(end, "end", round_up=True) if end else today + dt.timedelta(days=1)
    if start:
        first_day = _day_boundary(start, "start", round_up=False)
    else:  # (never before the first day a date can hold)
        first_day = max(end_day, dt.date.min + dt.timedelta(days=DEFAULT_DAYS)) - dt.timedelta(days=DEFAULT_DAYS)
    if first_day >= end_day:
        raise invalid_request("end must be after start.", param="end")
    return first_day, end_day


def _day_boundary(value: str, param: str, *, round_up: bool) -> dt.date:
    try:
        if len(value) == len("YYYY-MM-DD"):
            return dt.date.fromisoformat(value)
        when = dt.datetime.fromisoformat(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)  # the API speaks UTC
        when = when.astimezone(dt.UTC)
        past_midnight = when != when.replace(hour=0, minute=0, second=0, microsecond=0)
        return when.date() + dt.timedelta(days=1) if round_up and past_midnight else when.date()
    except (ValueError, OverflowError):
        raise invalid_request(f"{param} must be a date (YYYY-MM-DD) or an ISO 8601 datetime.", param=param) from None


def _usage_rows(tenant_id: int, first_day: dt.date, end_day: dt.date, group_by: str) -> list[dict[str, Any]]:
    group = _GROUPINGS[group_by]
    rows = (
        # Scoped by the caller's tenant first: nothing else's usage can appear.
        UsageRollup.objects.filter(
            tenant_id=tenant_id,
            granularity=UsageRollup.Granularity.DAY,
            bucket_start__gte=_midnight(first_day),
            bucket_start__lt=_midnight(end_day),
        )
        .order_by()
        .values(*group)
        .annotate(**{f"sum_{name}": Sum(name) for name in _COUNTS})
        .order_by(*group)
    )
    return [{**{g: row[g] for g in group}, **{name: row[f"sum_{name}"] for name in _COUNTS}} for row in rows]


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def _label(group_by: str, row: dict[str, Any]) -> dict[str, Any]:
    if group_by == "day":
        return {"day": row["bucket_start"].astimezone(dt.UTC).date().isoformat()}
    if group_by == "model":
        return {"model": row["public_model"]}
    # A key is named by what its owner sees in lists: never by its digest.
    return {"key": {"prefix": row["api_key__prefix"], "name": row["api_key__name"]}}


def _amounts(sums: dict[str, Any]) -> dict[str, Any]:
    n = {name: sums[name] or 0 for name in _COUNTS}
    return {
        "requests": n["requests"],
        "errors": n["errors"],
        "cache_hits": n["cache_hits"],
        "input_tokens": n["input_tokens"],
        "cached_input_tokens": n["cached_input_tokens"],
        "cache_write_tokens": n["cache_write_5m_tokens"] + n["cache_write_1h_tokens"],
        "output_tokens": n["output_tokens"],
        "reasoning_tokens": n["reasoning_tokens"],
        "cost_usd": usd_string(n["cost_nanos"]),
        "saved_usd": usd_string(n["saved_nanos"]),
    }
