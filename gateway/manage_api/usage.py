"""/api/usage: raw usage records (cursor pages) and a summary by day or model.

The records are the ledger's rows, newest first; `cursor` pages by id, so a
page never repeats or skips a row while new requests arrive. The summary
is billing.selectors' (as /v1/usage's): the daily rollups, brought up to
date every few minutes, so it keeps working after raw records are pruned.
"""

import datetime as dt
from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest
from ninja import Router

from billing import selectors
from billing.models import UsageRecord
from billing.pricing import usd_string
from billing.selectors import COUNTS, GROUPINGS, day_label
from gateway.manage_api.errors import ManagementError
from gateway.manage_api.schemas import UsagePage

router = Router(tags=["Usage"])
MAX_PAGE = 1000


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
    try:
        summary = selectors.usage_summary(
            group_by=group_by, start=start, end=end, tenant_id=tenant_id, key_id=key_id, model=model
        )
    except ValueError as exc:  # DaysError too
        message = str(exc)
        raise ManagementError(400, "invalid_request", message if message.endswith(".") else message + ".") from None
    return {
        "start": summary.first_day.isoformat(),
        "end": summary.end_day.isoformat(),
        "group_by": group_by,
        "data": [{group_by: _label(group_by, row), **_amounts(row)} for row in summary.rows],
        "total": _amounts(summary.total),
    }


def _filtered(rows: QuerySet[Any], tenant_id: int | None, key_id: int | None, model: str | None) -> QuerySet[Any]:
    if tenant_id is not None:
        rows = rows.filter(tenant_id=tenant_id)
    if key_id is not None:
        rows = rows.filter(api_key_id=key_id)
    if model is not None:
        rows = rows.filter(public_model=model)
    return rows


def _label(group_by: str, row: dict[str, Any]) -> Any:
    return day_label(row["bucket_start"]) if group_by == "day" else row[GROUPINGS[group_by][0]]


def _amounts(n: dict[str, Any]) -> dict[str, Any]:
    return {
        **{name: n[name] for name in COUNTS if not name.endswith("_nanos")},
        "cost_usd": usd_string(n["cost_nanos"]),
        "saved_usd": usd_string(n["saved_nanos"]),
    }
