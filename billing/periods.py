"""Calendar periods in UTC. Pure."""

import datetime as dt

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def period_start(period: str, when: dt.datetime) -> dt.datetime:
    """The start of the day, week (Monday), month or all time containing `when`."""
    when = when.astimezone(dt.UTC)
    midnight = when.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return midnight
    if period == "week":
        return midnight - dt.timedelta(days=midnight.weekday())
    if period == "month":
        return midnight.replace(day=1)
    if period == "total":
        return EPOCH
    raise ValueError(f"unknown budget period {period!r}")


def period_end(period: str, start: dt.datetime) -> dt.datetime | None:
    """The first instant after the period that starts at `start` (None: never)."""
    if period == "day":
        return start + dt.timedelta(days=1)
    if period == "week":
        return start + dt.timedelta(days=7)
    if period == "month":
        return (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    if period == "total":
        return None
    raise ValueError(f"unknown budget period {period!r}")
