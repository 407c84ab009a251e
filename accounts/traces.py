"""The database side of request tracing (TRACE_SINK=db): store and prune
`RequestTrace` rows. Called from proxy.tracing's writer thread and from the
retention task, never on the request path."""

import datetime as dt
from typing import Any

from django.db import connection
from django.utils import timezone

from accounts.models import RequestTrace

_FIELDS = {f.name for f in RequestTrace._meta.concrete_fields} - {"id"}


def request_traces_store(records: list[dict[str, Any]]) -> int:
    """Insert one batch of trace records (proxy.tracing.trace_record)."""
    rows = []
    for record in records:
        values = {name: record[name] for name in _FIELDS if name in record}
        values["started_at"] = dt.datetime.fromisoformat(record["started_at"])
        values["finished_at"] = dt.datetime.fromisoformat(record["finished_at"])
        rows.append(RequestTrace(**values))
    try:
        return len(RequestTrace.objects.bulk_create(rows))
    finally:
        # The writer is a long-lived thread: do not hold a pooled connection
        # between batches (inside a test's transaction it is the test's own).
        if not connection.in_atomic_block:
            connection.close()


def request_traces_prune(days: int) -> int:
    """Delete traces that started more than `days` days ago; returns how many."""
    deleted, _ = RequestTrace.objects.filter(started_at__lt=timezone.now() - dt.timedelta(days=days)).delete()
    return deleted


def request_trace_find(request_id: str) -> dict[str, Any] | None:
    """The stored trace of one request (TRACE_SINK=db), as trace_record writes it; None when there is none."""
    row = RequestTrace.objects.filter(request_id=request_id).values(*_FIELDS).first()
    if row is None:
        return None
    return {**row, "started_at": row["started_at"].isoformat(), "finished_at": row["finished_at"].isoformat()}
