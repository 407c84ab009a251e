"""Latency histograms: fixed buckets that rollups can sum and percentiles
can be read from. Pure.

A percentile cannot be rolled up, but counts per bucket can: the sum of two
hours' histograms is the histogram of the two hours. The bounds are fixed
forever (they are column names); a percentile read from them is exact to
within its bucket, and interpolated linearly inside it.
"""

import bisect
from collections.abc import Iterable, Sequence

# Upper bounds (exclusive) of every bucket but the last, which holds the rest.
LATENCY_BOUNDS_MS = (25, 50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000, 20000, 60000)
BUCKET_COUNT = len(LATENCY_BOUNDS_MS) + 1
EMPTY = (0,) * BUCKET_COUNT


def column_names(prefix: str) -> tuple[str, ...]:
    """One rollup column per bucket: latency_lt_25ms ... latency_ge_60000ms."""
    return (*(f"{prefix}_lt_{bound}ms" for bound in LATENCY_BOUNDS_MS), f"{prefix}_ge_{LATENCY_BOUNDS_MS[-1]}ms")


LATENCY_COLUMNS = column_names("latency")
TTFT_COLUMNS = column_names("ttft")


def bucket_index(ms: int) -> int:
    return bisect.bisect_right(LATENCY_BOUNDS_MS, ms)


def bucket_range(index: int) -> tuple[int, int | None]:
    """[low, high) of a bucket in ms; high is None for the last."""
    low = LATENCY_BOUNDS_MS[index - 1] if index else 0
    return low, LATENCY_BOUNDS_MS[index] if index < len(LATENCY_BOUNDS_MS) else None


def histogram_of(ms: int | None) -> tuple[int, ...]:
    """The histogram of one observation (all zeros when there is none)."""
    if ms is None:
        return EMPTY
    counts = [0] * BUCKET_COUNT
    counts[bucket_index(ms)] = 1
    return tuple(counts)


def histogram_add(a: Sequence[int], b: Sequence[int]) -> tuple[int, ...]:
    return tuple(x + y for x, y in zip(a, b, strict=True))


def histogram_sum(histograms: Iterable[Sequence[int]]) -> tuple[int, ...]:
    total = EMPTY
    for histogram in histograms:
        total = histogram_add(total, histogram)
    return total


def percentile_ms(counts: Sequence[int], percent: int) -> int | None:
    """The `percent`th percentile in whole ms (None without observations).

    Interpolated inside its bucket, assuming values spread evenly there; in
    the open last bucket it is the bucket's lower bound (a floor, "60 s or more").
    """
    total = sum(counts)
    if total == 0:
        return None
    rank = total * percent  # in hundredths of an observation, to stay in integers
    below = 0
    for index, count in enumerate(counts):
        if count and (below + count) * 100 >= rank:
            low, high = bucket_range(index)
            if high is None:
                return low
            return low + (high - low) * (rank - below * 100) // (count * 100)
        below += count
    raise AssertionError("unreachable: the ranks add up to the total")
