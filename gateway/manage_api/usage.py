"""/api/usage: raw usage records (cursor pages) and a summary by day or model.

The records are the ledger's rows, newest first; `cursor` pages by id, so a
page never repeats or skips a row while new requests arrive. The summary
reads the daily rollups (like /v1/usage), brought up to date every few
minutes, and keeps working after raw records are pruned.
"""

import datetime as dt
from typing import Any

from django.db.models import QuerySet, Sum
from django.http import HttpRequest
from ninja import Router

from billing.api import days_requested
from billing.models import UsageRecord, UsageRollup
from billing.pricing import usd_string
from gateway.manage_api.errors import ManagementError
from gateway.manage_api.schemas import UsagePage

router = Router(tags=["Usage"])
MAX_PAGE = 1000
_SUMMED = (
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
_GROUPINGS = {"day": "bucket_start", "model": "public_model", "tenant": "tenant_id", "key": "api_key_id"}


@router.get("/usage", response=UsagePage)
def usage_list(
    request: HttpRequest,
    tenant_id: int | None = None,
    key_id: int | None = None,
    model: str | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> dict[str, Any]:
    """Records with `start <= created_at < end` and the other filters; `model` is the public model."""
    if not 1 <= limit <= MAX_PAGE:
        raise ManagementError(400, "invalid_request", f"limit must be between 1 and {MAX_PAGE}.")
    rows = _filtered(UsageRecord.objects.all(), tenant_id, key_id, model)
    if start is not None:
        rows = rows.filter(created_at__gte=start)
    if end is not None:
        rows = rows.filter(created_at__lt=end)
    if cursor:
        if not cursor.isdigit():
            raise ManagementError(400, "invalid_request", "cursor is the next_cursor of a previous page.")
        rows = rows.filter(pk__lt=int(cursor))
    page = list(rows.order_by("-pk")[: limit + 1])
    more = len(page) > limit
    page = page[:limit]
    return {"items": page, "next_cursor": str(page[-1].pk) if more else None}


@router.get("/usage/summary")
def usage_summary(
    request: HttpRequest,
    group_by: str = "day",
    tenant_id: int | None = None,
    key_id: int | None = None,
    model: str | None = None,
    start: str | None = None,
    end: str | None = None,
) -> dict[str, Any]:
    """Requests, tokens and cost per day, model, tenant or key over whole UTC days (default: the last 30)."""
    if group_by not in _GROUPINGS:
        raise ManagementError(400, "invalid_request", f"group_by must be one of {', '.join(_GROUPINGS)}.")
    first_day, end_day = days_requested(start, end, today=dt.datetime.now(dt.UTC).date())
    rows = _filtered(UsageRollup.objects.filter(granularity=UsageRollup.Granularity.DAY), tenant_id, key_id, model)
    rows = rows.filter(bucket_start__gte=_midnight(first_day), bucket_start__lt=_midnight(end_day))
    column = _GROUPINGS[group_by]
    sums = rows.order_by().values(column).annotate(**{name: Sum(name) for name in _SUMMED}).order_by(column)
    data = [{group_by: _label(group_by, row[column]), **_amounts(row)} for row in sums]
    total = {name: sum(row[name] or 0 for row in sums) for name in _SUMMED}
    return {
        "start": first_day.isoformat(),
        "end": end_day.isoformat(),
        "group_by": group_by,
        "data": data,
        "total": _amounts(total),
    }


def _filtered(rows: QuerySet[Any], tenant_id: int | None, key_id: int | None, model: str | None) -> QuerySet[Any]:
    if tenant_id is not None:
        rows = rows.filter(tenant_id=tenant_id)
    if key_id is not None:
        rows = rows.filter(api_key_id=key_id)
    if model is not None:
        rows = rows.filter(public_model=model)
    return rows


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def _label(group_by: str, value: Any) -> Any:
    return value.astimezone(dt.UTC).date().isoformat() if group_by == "day" else value


def _amounts(row: dict[str, Any]) -> dict[str, Any]:
    n = {name: row[name] or 0 for name in _SUMMED}
    return {
        **{name: n[name] for name in _SUMMED if not name.endswith("_nanos")},
        "cost_usd": usd_string(n["cost_nanos"]),
        "saved_usd": usd_string(n["saved_nanos"]),
    }
