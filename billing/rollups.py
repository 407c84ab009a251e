"""Hourly and daily usage rollups, and the pruning of the raw records they cover.

The invariant, to the last nano-dollar: every rollup row holds the sums of
exactly the records of its bucket and group that are marked `rolled_up`
(latency and time-to-first-token histograms included: counts add up too).
The reconciliation and budgets read usage as "daily rollups plus the
records not rolled up yet", which is exact only under that invariant.

A run marks a batch of unrolled records and, in the same transaction,
recomputes each hour and day bucket they fall in from the raw records, so a
rerun, an overlap or a record committed late (its bucket already rolled)
can never count anything twice. Once retention has pruned part of a bucket
its raw records no longer add up to it; such a group is then brought up to
date by adding the batch to its row instead, which keeps it exact.
"""

import datetime as dt
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, Q, QuerySet, Sum
from django.utils import timezone

from billing.histograms import (
    EMPTY,
    LATENCY_COLUMNS,
    TTFT_COLUMNS,
    bucket_range,
    histogram_add,
    histogram_of,
)
from billing.models import UsageRecord, UsageRollup

HOUR, DAY = UsageRollup.Granularity.HOUR, UsageRollup.Granularity.DAY
_STEP = {HOUR: dt.timedelta(hours=1), DAY: dt.timedelta(days=1)}
_GROUP = ("tenant_id", "api_key_id", "public_model", "provider")
_TOKEN_AND_MONEY_FIELDS = (
    "input_tokens",
    "cached_input_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_nanos",
    "saved_nanos",
)
# Keeps `pk IN (...)` lists under every backend's limit on query parameters.
_IDS_PER_QUERY = 500
# Any fixed number: the PostgreSQL advisory lock that lets one rollup run at a time.
_ROLLUP_LOCK_ID = 0x6277_726F_6C6C

Group = tuple[int, int, str, str]  # tenant id, key id, public model, provider


@dataclass(frozen=True, slots=True)
class Totals:
    """What a set of usage records adds up to; the summed fields of a rollup row."""

    requests: int = 0
    errors: int = 0
    cache_hits: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cost_nanos: int = 0
    saved_nanos: int = 0
    prepaid_cost_nanos: int = 0
    latency_histogram: tuple[int, ...] = EMPTY  # requests per latency bucket
    ttft_histogram: tuple[int, ...] = EMPTY  # streams per time-to-first-token bucket

    def __add__(self, other: "Totals") -> "Totals":
        return Totals(**{name: _plus(getattr(self, name), getattr(other, name)) for name in TOTALS_FIELDS})

    @classmethod
    def of_record(cls, record: Mapping[str, Any]) -> "Totals":
        return cls(
            requests=1,
            errors=int(record["status_code"] >= 400),
            cache_hits=int(record["cache_hit"]),
            prepaid_cost_nanos=record["cost_nanos"] if record["prepaid"] else 0,
            latency_histogram=histogram_of(record["latency_ms"]),
            ttft_histogram=histogram_of(record["ttft_ms"]),
            **{name: record[name] for name in _TOKEN_AND_MONEY_FIELDS},
        )

    @classmethod
    def of_row(cls, row: Mapping[str, Any]) -> "Totals":
        """From an aggregate (None when nothing matched) or a rollup row's
        values, both keyed by ROLLUP_COLUMNS."""
        return cls(
            **{name: row[name] or 0 for name in SCALAR_FIELDS},
            latency_histogram=tuple(row[name] or 0 for name in LATENCY_COLUMNS),
            ttft_histogram=tuple(row[name] or 0 for name in TTFT_COLUMNS),
        )

    def columns(self) -> dict[str, int]:
        """The rollup row's summed columns."""
        return {
            **{name: getattr(self, name) for name in SCALAR_FIELDS},
            **dict(zip(LATENCY_COLUMNS, self.latency_histogram, strict=True)),
            **dict(zip(TTFT_COLUMNS, self.ttft_histogram, strict=True)),
        }


def _plus(a: Any, b: Any) -> Any:
    return histogram_add(a, b) if isinstance(a, tuple) else a + b


TOTALS_FIELDS = tuple(f.name for f in fields(Totals))
SCALAR_FIELDS = tuple(name for name in TOTALS_FIELDS if not name.endswith("_histogram"))
ROLLUP_COLUMNS = (*SCALAR_FIELDS, *LATENCY_COLUMNS, *TTFT_COLUMNS)
Deltas = dict[dt.datetime, dict[Group, Totals]]


def usage_rollup(batch_size: int = 5000) -> int:
    """Roll up every record due; returns how many records were newly rolled up.

    Drains in batches of `batch_size`, each in its own transaction. Only
    records created before the run started are due, so a steady stream of
    new traffic cannot keep one run going forever; the next run takes them.
    """
    due_before = timezone.now()
    total = 0
    while rolled := _rollup_batch(batch_size, due_before):
        total += rolled
    return total


def usage_retention(days: int, batch_size: int = 5000) -> int:
    """Delete raw records older than `days` that are rolled up; returns how many.

    A record not rolled up yet is kept whatever its age: deleting it would
    lose money the rollups have not counted. Deletes go by primary key in
    batches, so no single statement locks a large part of the ledger.
    """
    if days < 1:
        raise ValueError("usage retention must keep at least one day")
    cutoff = timezone.now() - dt.timedelta(days=days)
    deleted = 0
    while True:
        ids = list(
            UsageRecord.objects.filter(rolled_up=True, created_at__lt=cutoff)
            .order_by()
            .values_list("pk", flat=True)[:batch_size]
        )
        if not ids:
            return deleted
        with transaction.atomic():
            for chunk in _chunks(ids):
                deleted += UsageRecord.objects.filter(pk__in=chunk, rolled_up=True).delete()[0]


@transaction.atomic
def _rollup_batch(batch_size: int, due_before: dt.datetime) -> int:
    _lock_out_other_runs()
    batch = list(
        UsageRecord.objects.filter(rolled_up=False, created_at__lte=due_before)
        .order_by("created_at")  # the partial index on unrolled records serves this
        .values(
            "pk",
            "created_at",
            "status_code",
            "cache_hit",
            "prepaid",
            "latency_ms",
            "ttft_ms",
            *_GROUP,
            *_TOKEN_AND_MONEY_FIELDS,
        )[:batch_size]
    )
    if not batch:
        return 0
    _mark_rolled_up([record["pk"] for record in batch])
    for granularity in (HOUR, DAY):
        for bucket_start, deltas in _deltas_by_bucket(batch, granularity).items():
            _bucket_rewrite(granularity, bucket_start, deltas)
    return len(batch)


def _lock_out_other_runs() -> None:
    """Two overlapping runs would rewrite the same buckets from different
    views of the ledger. PostgreSQL: wait for the other run's batch to
    commit. SQLite allows one writer at a time anyway, and the marking
    below refuses a batch that another run has taken meanwhile."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_ROLLUP_LOCK_ID])


def _mark_rolled_up(ids: list[int]) -> None:
    for chunk in _chunks(ids):
        marked = UsageRecord.objects.filter(pk__in=chunk, rolled_up=False).update(rolled_up=True)
        if marked != len(chunk):
            # Another run rolled some of these up since they were selected:
            # undo the whole batch rather than count them twice.
            raise RuntimeError("usage records were rolled up by a concurrent run; retry")


def bucket_start(when: dt.datetime, granularity: str) -> dt.datetime:
    """The UTC hour or day containing `when` (as TruncHour/TruncDay with tzinfo=UTC)."""
    hour = when.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    return hour if granularity == HOUR else hour.replace(hour=0)


def _deltas_by_bucket(batch: Sequence[Mapping[str, Any]], granularity: str) -> Deltas:
    deltas: Deltas = defaultdict(lambda: defaultdict(Totals))
    for record in batch:
        group: Group = tuple(record[name] for name in _GROUP)  # type: ignore[assignment]  # _GROUP's length, which a checker cannot count
        by_group = deltas[bucket_start(record["created_at"], granularity)]
        by_group[group] = by_group[group] + Totals.of_record(record)
    return deltas


def _bucket_rewrite(granularity: str, start: dt.datetime, deltas: Mapping[Group, Totals]) -> None:
    """Recompute one bucket's rows; `deltas` are the batch just marked in it."""
    rolled = _rolled_up_totals(
        UsageRecord.objects.filter(rolled_up=True, created_at__gte=start, created_at__lt=start + _STEP[granularity])
    )
    rows = UsageRollup.objects.filter(granularity=granularity, bucket_start=start)
    stored = {tuple(row[name] for name in _GROUP): Totals.of_row(row) for row in rows.values(*_GROUP, *ROLLUP_COLUMNS)}
    wanted: dict[Group, Totals] = {}
    for group in rolled.keys() | stored.keys():
        before = stored.get(group, Totals())
        delta = deltas.get(group, Totals())
        kept = rolled.get(group, Totals())
        # Fewer records left than the row counted before this batch: retention
        # pruned some, so the raw records can no longer rebuild the row.
        pruned = before.requests > kept.requests - delta.requests
        wanted[group] = before + delta if pruned else kept
    if wanted == stored:
        return
    rows.delete()
    UsageRollup.objects.bulk_create(
        UsageRollup(
            granularity=granularity,
            bucket_start=start,
            **dict(zip(_GROUP, group, strict=True)),
            **totals.columns(),
        )
        for group, totals in wanted.items()
    )


def _rolled_up_totals(records: QuerySet[UsageRecord]) -> dict[Group, Totals]:
    sums = {f"total_{name}": Sum(name) for name in _TOKEN_AND_MONEY_FIELDS}
    rows = (
        records.order_by()
        .values(*_GROUP)
        .annotate(
            total_requests=Count("pk"),
            total_errors=Count("pk", filter=Q(status_code__gte=400)),
            total_cache_hits=Count("pk", filter=Q(cache_hit=True)),
            total_prepaid_cost_nanos=Sum("cost_nanos", filter=Q(prepaid=True)),
            **sums,
            **_bucket_counts(LATENCY_COLUMNS, "latency_ms"),
            **_bucket_counts(TTFT_COLUMNS, "ttft_ms"),
        )
    )
    return {
        tuple(row[name] for name in _GROUP): Totals.of_row({name: row[f"total_{name}"] for name in ROLLUP_COLUMNS})
        for row in rows
    }  # type: ignore[misc]  # keys of _GROUP's length, as above


def _bucket_counts(columns: tuple[str, ...], field: str) -> dict[str, Count]:
    """One filtered COUNT per histogram bucket (NULLs, streams without a first token, fall in none)."""
    counts = {}
    for index, column in enumerate(columns):
        low, high = bucket_range(index)
        within = Q(**{f"{field}__gte": low}) & (Q(**{f"{field}__lt": high}) if high is not None else Q())
        counts[f"total_{column}"] = Count("pk", filter=within)
    return counts


def _chunks(ids: list[int]) -> Iterator[list[int]]:
    for i in range(0, len(ids), _IDS_PER_QUERY):
        yield ids[i : i + _IDS_PER_QUERY]
