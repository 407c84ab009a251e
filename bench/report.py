"""Statistics over the measured phases, and the tables that show them."""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from bench.load import Phase


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), interpolating between the closest ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Stats:
    """One target's measured phases, pooled: the rounds count as one sample."""

    requests: int
    rps: float  # successful requests per second of phase time
    p50: float  # seconds, successful requests only
    p99: float
    ttfb_p50: float | None
    errors: Counter[str]

    @classmethod
    def of(cls, phases: Sequence[Phase]) -> "Stats":
        ok = [s for phase in phases for s in phase.succeeded]
        latencies = [s.latency for s in ok]
        ttfbs = [s.ttfb for s in ok if s.ttfb is not None]
        elapsed = sum(phase.elapsed for phase in phases)
        errors: Counter[str] = Counter()
        for phase in phases:
            errors.update(phase.errors)
        return cls(
            requests=sum(phase.requests for phase in phases),
            rps=len(ok) / elapsed if elapsed else 0.0,
            p50=percentile(latencies, 50),
            p99=percentile(latencies, 99),
            ttfb_p50=percentile(ttfbs, 50) if ttfbs else None,
            errors=errors,
        )

    @property
    def tail_ratio(self) -> float:
        return self.p99 / self.p50 if self.p50 else float("nan")


@dataclass(frozen=True)
class Comparison:
    """Direct and through-the-gateway results at one concurrency (and, for
    the cache scenario, the same request answered from the gateway's cache)."""

    scenario: str
    concurrency: int
    direct: Stats
    gateway: Stats
    gateway_cpu_seconds: float  # daphne's CPU time over the measured gateway phases
    cached: Stats | None = None
    cached_cpu_seconds: float = 0.0  # daphne's CPU time over the measured cache-hit phases

    @property
    def cpu_per_request(self) -> float:
        return _per_request(self.gateway_cpu_seconds, self.gateway.requests)

    @property
    def cached_cpu_per_request(self) -> float:
        return _per_request(self.cached_cpu_seconds, self.cached.requests if self.cached else 0)


def _per_request(cpu_seconds: float, requests: int) -> float:
    return cpu_seconds / requests if requests else float("nan")


def _ms(seconds: float | None, *, signed: bool = False) -> str:
    if seconds is None or seconds != seconds:  # None or NaN
        return "-"
    ms = seconds * 1000
    decimals = 2 if abs(ms) < 100 else 1  # 0.01 ms resolution is noise above 100 ms
    return f"{ms:+.{decimals}f}" if signed else f"{ms:.{decimals}f}"


def _errors(stats: Stats) -> str:
    return str(sum(stats.errors.values()))


def scenario_table(comparisons: Sequence[Comparison], *, markdown: bool) -> str:
    """Two rows per concurrency: direct, then the gateway with what it adds
    (three with a cache: direct, forwarded upstream, answered from the cache)."""
    stream = comparisons[0].scenario == "stream"
    headers = ["c", "target", "req/s", "p50 ms", "p99 ms", "p99/p50", "+p50 ms", "+p99 ms"]
    if stream:
        headers += ["TTFB p50 ms", "+TTFB p50 ms"]
    headers += ["CPU ms/req", "errors"]
    rows: list[list[str]] = []
    for cmp in comparisons:
        d = cmp.direct
        direct = [str(cmp.concurrency), "direct", f"{d.rps:.0f}", _ms(d.p50), _ms(d.p99), f"{d.tail_ratio:.1f}", "", ""]
        direct += [_ms(d.ttfb_p50), ""] if stream else []
        rows.append(direct + ["", _errors(d)])
        # Beside a cache hit, "gateway" would not say which of the two it is.
        name = "gateway" if cmp.cached is None else "forwarded"
        rows.append(_gateway_row(name, cmp.gateway, d, cmp.cpu_per_request, stream=stream))
        if cmp.cached is not None:
            rows.append(_gateway_row("cache hit", cmp.cached, d, cmp.cached_cpu_per_request, stream=stream))
    return table_render(headers, rows, markdown=markdown)


def _gateway_row(name: str, stats: Stats, direct: Stats, cpu_per_request: float, *, stream: bool) -> list[str]:
    """A row through the gateway, with what it adds to the direct row."""
    row = [
        "",
        name,
        f"{stats.rps:.0f}",
        _ms(stats.p50),
        _ms(stats.p99),
        f"{stats.tail_ratio:.1f}",
        _ms(stats.p50 - direct.p50, signed=True),
        _ms(stats.p99 - direct.p99, signed=True),
    ]
    if stream:
        added = stats.ttfb_p50 - direct.ttfb_p50 if stats.ttfb_p50 is not None and direct.ttfb_p50 is not None else None
        row += [_ms(stats.ttfb_p50), _ms(added, signed=True)]
    return row + [f"{cpu_per_request * 1000:.2f}", _errors(stats)]


def cache_cost_lines(comparisons: Sequence[Comparison]) -> list[str]:
    """What a cache hit costs the gateway, as a share of a forwarded request's CPU
    time: per concurrency, then pooled over all levels."""
    cached = [c for c in comparisons if c.cached is not None]
    if not cached:
        return []
    lines = [f"c={c.concurrency}: " + _cache_cost(c.cached_cpu_per_request, c.cpu_per_request) for c in cached]
    forwarded = _per_request(sum(c.gateway_cpu_seconds for c in cached), sum(c.gateway.requests for c in cached))
    hit = _per_request(
        sum(c.cached_cpu_seconds for c in cached), sum(c.cached.requests for c in cached if c.cached is not None)
    )
    lines.append("all levels: " + _cache_cost(hit, forwarded))
    return lines


def _cache_cost(hit: float, forwarded: float) -> str:
    share = hit / forwarded * 100 if forwarded else float("nan")
    return (
        f"a cache hit costs {share:.0f}% of a forwarded request's gateway CPU "
        f"({hit * 1000:.2f} vs {forwarded * 1000:.2f} ms/req)"
    )


def table_render(headers: list[str], rows: list[list[str]], *, markdown: bool) -> str:
    """Numbers right-aligned, the target's name left-aligned."""
    left = [header == "target" for header in headers]
    if markdown:
        rule = "|" + "|".join(":---" if is_left else "---:" for is_left in left) + "|"
        lines = ["| " + " | ".join(headers) + " |", rule]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = [
        "  ".join(
            cell.ljust(width) if is_left else cell.rjust(width)
            for cell, width, is_left in zip(row, widths, left, strict=True)
        )
        for row in [headers, *rows]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def errors_describe(comparisons: Sequence[Comparison]) -> list[str]:
    """One line per kind of failure, so a non-zero count can be read."""
    lines = []
    for cmp in comparisons:
        targets = [("direct", cmp.direct), ("gateway", cmp.gateway)]
        if cmp.cached is not None:
            targets = [("direct", cmp.direct), ("forwarded", cmp.gateway), ("cache hit", cmp.cached)]
        for name, stats in targets:
            for error, count in stats.errors.most_common():
                lines.append(f"{cmp.scenario} c={cmp.concurrency} {name}: {count} x {error}")
    return lines
