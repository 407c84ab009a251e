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
    """Direct and through-the-gateway results at one concurrency."""

    scenario: str
    concurrency: int
    direct: Stats
    gateway: Stats
    gateway_cpu_seconds: float  # daphne's CPU time over the measured gateway phases

    @property
    def cpu_per_request(self) -> float:
        return self.gateway_cpu_seconds / self.gateway.requests if self.gateway.requests else float("nan")


def _ms(seconds: float | None, *, signed: bool = False) -> str:
    if seconds is None or seconds != seconds:  # None or NaN
        return "-"
    ms = seconds * 1000
    decimals = 2 if abs(ms) < 100 else 1  # 0.01 ms resolution is noise above 100 ms
    return f"{ms:+.{decimals}f}" if signed else f"{ms:.{decimals}f}"


def _errors(stats: Stats) -> str:
    return str(sum(stats.errors.values()))


def scenario_table(comparisons: Sequence[Comparison], *, markdown: bool) -> str:
    """Two rows per concurrency: direct, then the gateway with what it adds."""
    stream = comparisons[0].scenario == "stream"
    headers = ["c", "target", "req/s", "p50 ms", "p99 ms", "p99/p50", "+p50 ms", "+p99 ms"]
    if stream:
        headers += ["TTFB p50 ms", "+TTFB p50 ms"]
    headers += ["CPU ms/req", "errors"]
    rows: list[list[str]] = []
    for cmp in comparisons:
        d, g = cmp.direct, cmp.gateway
        direct = [str(cmp.concurrency), "direct", f"{d.rps:.0f}", _ms(d.p50), _ms(d.p99), f"{d.tail_ratio:.1f}", "", ""]
        gateway = ["", "gateway", f"{g.rps:.0f}", _ms(g.p50), _ms(g.p99), f"{g.tail_ratio:.1f}",
                   _ms(g.p50 - d.p50, signed=True), _ms(g.p99 - d.p99, signed=True)]  # fmt: skip
        if stream:
            added_ttfb = g.ttfb_p50 - d.ttfb_p50 if g.ttfb_p50 is not None and d.ttfb_p50 is not None else None
            direct += [_ms(d.ttfb_p50), ""]
            gateway += [_ms(g.ttfb_p50), _ms(added_ttfb, signed=True)]
        direct += ["", _errors(d)]
        gateway += [f"{cmp.cpu_per_request * 1000:.2f}", _errors(g)]
        rows += [direct, gateway]
    return table_render(headers, rows, markdown=markdown)


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
        "  ".join(cell.ljust(width) if is_left else cell.rjust(width)
                  for cell, width, is_left in zip(row, widths, left, strict=True))  # fmt: skip
        for row in [headers, *rows]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def errors_describe(comparisons: Sequence[Comparison]) -> list[str]:
    """One line per kind of failure, so a non-zero count can be read."""
    lines = []
    for cmp in comparisons:
        for name, stats in (("direct", cmp.direct), ("gateway", cmp.gateway)):
            for error, count in stats.errors.most_common():
                lines.append(f"{cmp.scenario} c={cmp.concurrency} {name}: {count} x {error}")
    return lines
