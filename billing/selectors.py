"""Reads of usage and cost: the one place a usage summary is computed.

Both GET /v1/usage (a key's own tenant) and GET /api/usage/summary (staff)
read the daily rollups through `usage_summary`, so they agree on what a day,
a group and a total are; each API only renders the answer in its own shape.

Days are UTC. `start` and `end` take a date (YYYY-MM-DD) or an ISO 8601
datetime and are widened to whole days: `start` falls back to the start of
its day, `end` is exclusive and moves forward to the next midnight unless it
is one.
"""

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.db.models import Sum

from billing.models import UsageRollup

DEFAULT_DAYS = 30
# What each `group_by` groups the daily rows by (a key: its id, and what its owner sees in lists).
GROUPINGS: dict[str, tuple[str, ...]] = {
    "day": ("bucket_start",),
    "model": ("public_model",),
    "tenant": ("tenant_id",),
    "key": ("api_key_id", "api_key__prefix", "api_key__name"),
}
COUNTS = (
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


class DaysError(ValueError):
    """A `start` or `end` that names no day, or an empty range; `param` says which."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class UsageSummary:
    first_day: dt.date
    end_day: dt.date  # exclusive
    group_by: str
    rows: list[dict[str, Any]]  # the group's columns (GROUPINGS) and every count of COUNTS
    total: dict[str, int]


def usage_summary(
    *,
    group_by: str,
    start: str | None = None,
    end: str | None = None,
    tenant_id: int | None = None,
    key_id: int | None = None,
    model: str | None = None,
    today: dt.date | None = None,
) -> UsageSummary:
    """Counts and cost per group over whole UTC days (default: the last 30, today included).

    Raises DaysError for bad days and ValueError for an unknown `group_by`."""
    if group_by not in GROUPINGS:
        raise ValueError(f"group_by must be one of {', '.join(GROUPINGS)}")
    first_day, end_day = days_requested(start, end, today=today or dt.datetime.now(dt.UTC).date())
    rows = UsageRollup.objects.filter(
        granularity=UsageRollup.Granularity.DAY,
        bucket_start__gte=midnight(first_day),
        bucket_start__lt=midnight(end_day),
    )
    for field, value in (("tenant_id", tenant_id), ("api_key_id", key_id), ("public_model", model)):
        if value is not None:
            rows = rows.filter(**{field: value})
    group = GROUPINGS[group_by]
    sums = rows.order_by().values(*group).annotate(**{f"sum_{n}": Sum(n) for n in COUNTS}).order_by(*group)
    found = [{**{g: row[g] for g in group}, **{n: row[f"sum_{n}"] or 0 for n in COUNTS}} for row in sums]
    total = {name: sum(row[name] for row in found) for name in COUNTS}
    return UsageSummary(first_day, end_day, group_by, found, total)


def days_requested(start: str | None, end: str | None, *, today: dt.date) -> tuple[dt.date, dt.date]:
    """The first day and the (exclusive) end day asked for; by default the last 30 days, today included."""
    end_day = _day_boundary(end, "end", round_up=True) if end else today + dt.timedelta(days=1)
    if start:
        first_day = _day_boundary(start, "start", round_up=False)
    else:  # (never before the first day a date can hold)
        first_day = max(end_day, dt.date.min + dt.timedelta(days=DEFAULT_DAYS)) - dt.timedelta(days=DEFAULT_DAYS)
    if first_day >= end_day:
        raise DaysError("end must be after start.", "end")
    return first_day, end_day


def _day_boundary(value: str, param: str, *, round_up: bool) -> dt.date:
    try:
        if len(value) == len("YYYY-MM-DD"):
            return dt.date.fromisoformat(value)
        when = dt.datetime.fromisoformat(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)  # the APIs speak UTC
        when = when.astimezone(dt.UTC)
        past_midnight = when != when.replace(hour=0, minute=0, second=0, microsecond=0)
        return when.date() + dt.timedelta(days=1) if round_up and past_midnight else when.date()
    except (ValueError, OverflowError):
        raise DaysError(f"{param} must be a date (YYYY-MM-DD) or an ISO 8601 datetime.", param) from None


def midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def day_label(bucket_start: dt.datetime) -> str:
    return bucket_start.astimezone(dt.UTC).date().isoformat()
