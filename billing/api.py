"""GET /v1/usage: a key's view of its tenant's usage and cost, from the daily rollups.

Days are UTC. `start` and `end` take a date (YYYY-MM-DD) or an ISO 8601
datetime and are widened to whole days: `start` falls back to the start of
its day, `end` is exclusive and moves forward to the next midnight unless it
is one. The answer echoes the days it covers. Money is a string with exactly
nine decimals ("0.000013800"): the ledger counts nano-dollars, and a string
cannot lose them to a float. Usage appears once the rollup task (every few
minutes) has counted it. The summary itself is billing.selectors'.
"""

from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, JsonResponse
from ninja import Router

from accounts.auth import ApiKeyAuth
from billing.pricing import usd_string
from billing.selectors import DaysError, UsageSummary, day_label, usage_summary
from gateway.kernel.context import caller
from gateway.kernel.errors import invalid_request

router = Router(auth=ApiKeyAuth(), tags=["Usage"])

GROUPINGS = ("day", "model", "key")  # a key sees its own tenant only: no grouping by tenant


@router.get("/usage", summary="Usage and cost of this key's tenant, per day, model or key")
async def usage(
    request: HttpRequest, start: str | None = None, end: str | None = None, group_by: str = "day"
) -> JsonResponse:
    ctx = caller(request)
    if group_by not in GROUPINGS:
        raise invalid_request(f"group_by must be one of {', '.join(sorted(GROUPINGS))}.", param="group_by")
    try:
        # Scoped by the caller's tenant first: nothing else's usage can appear.
        summary: UsageSummary = await sync_to_async(usage_summary)(
            group_by=group_by, start=start, end=end, tenant_id=ctx.tenant_id
        )
    except DaysError as exc:
        raise invalid_request(str(exc), param=exc.param) from None
    return JsonResponse(
        {
            "object": "usage",
            "tenant": ctx.tenant_slug,
            "start": summary.first_day.isoformat(),
            "end": summary.end_day.isoformat(),
            "group_by": group_by,
            "data": [{**_label(group_by, row), **_amounts(row)} for row in summary.rows],
            "total": _amounts(summary.total),
        }
    )


def _label(group_by: str, row: dict[str, Any]) -> dict[str, Any]:
    if group_by == "day":
        return {"day": day_label(row["bucket_start"])}
    if group_by == "model":
        return {"model": row["public_model"]}
    # A key is named by what its owner sees in lists: never by its digest.
    return {"key": {"prefix": row["api_key__prefix"], "name": row["api_key__name"]}}


def _amounts(n: dict[str, Any]) -> dict[str, Any]:
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
