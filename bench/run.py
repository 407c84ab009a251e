"""Benchmark the gateway against its own upstream, called directly.

    python bench/run.py                      # defaults: json, stream and cache at c=1,16,64
    python bench/run.py --quick              # a smoke test of a few seconds
    python bench/run.py --markdown           # tables for the README
    python bench/run.py --scenarios cache    # forwarded vs answered from the response cache

Each scenario alternates direct and gateway phases, so whatever else the
machine is doing hits both alike; the difference is what the gateway adds.
The cache scenario adds a third phase to each round: the same JSON request
answered from the gateway's response cache. After the load, the usage ledger
is checked against the requests answered.
See bench/README.md.
"""

import argparse
import asyncio
import contextlib
import datetime as dt
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

if __package__ in (None, ""):  # run as a script: `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import load, report, stack

SCENARIOS = ("json", "stream", "cache")
SCENARIO_TITLES = {
    "json": "JSON (stream: false)",
    "stream": "Streaming (SSE, 20 content chunks)",
    "cache": "Response cache (JSON, the same request: forwarded upstream vs answered from the cache)",
}
# The entry is written in the background after the first answer: how long
# to wait for it before the cache scenario gives up.
CACHE_READY_TIMEOUT_SECONDS = 5.0
CACHE_READY_POLL_SECONDS = 0.05
# The meter writes every BILLING_METER_FLUSH_SECONDS (1 s by default).
BOOKS_SETTLE_SECONDS = 2.0
LOG_EXCERPT_LINES = 15
NOTABLE_LOG_WORDS = ("WARNING", "ERROR", "CRITICAL", "Traceback", "Exception")


@dataclass(frozen=True)
class Options:
    duration: float
    rounds: int
    warmup: float
    concurrency: list[int]
    scenarios: list[str]
    markdown: bool
    keep: bool


def options_parse(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, help="Seconds per phase (default 4; 1 with --quick).")
    parser.add_argument("--rounds", type=int, help="Interleaved rounds per scenario (default 2; 1 with --quick).")
    parser.add_argument("--warmup", type=float, help="Seconds of unmeasured load per target first (default 1).")
    parser.add_argument("--concurrency", nargs="+", help="Levels, e.g. 1 16 64 or 1,16,64 (default 1,16,64).")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="Comma-separated: json, stream, cache.")
    parser.add_argument("--quick", action="store_true", help="A short run to check that everything works.")
    parser.add_argument("--markdown", action="store_true", help="Print the tables as Markdown.")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary directory (database, logs).")
    args = parser.parse_args(argv)

    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if unknown := set(scenarios) - set(SCENARIOS):
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))} (choose from {', '.join(SCENARIOS)})")
    try:
        levels = [int(v) for arg in args.concurrency or [] for v in arg.split(",") if v]
    except ValueError:
        parser.error("--concurrency takes integers")
    if any(level < 1 for level in levels):
        parser.error("--concurrency levels must be at least 1")
    if args.duration is not None and args.duration <= 0 or args.rounds is not None and args.rounds < 1:
        parser.error("--duration must be positive and --rounds at least 1")
    quick = args.quick
    return Options(
        duration=args.duration if args.duration is not None else (1.0 if quick else 4.0),
        rounds=args.rounds if args.rounds is not None else (1 if quick else 2),
        warmup=args.warmup if args.warmup is not None else (0.3 if quick else 1.0),
        concurrency=levels or ([1, 16] if quick else [1, 16, 64]),
        scenarios=scenarios,
        markdown=args.markdown,
        keep=args.keep,
    )


# --- measuring -----------------------------------------------------------------


@dataclass
class Run:
    """The whole benchmark's results, and what the books must show."""

    comparisons: list[report.Comparison]
    answered_2xx: int = 0  # gateway requests answered 2xx, warm-ups included: each must be billed
    cache_hits: int = 0  # of those, answered from the cache: each must be billed as a hit

    def count(self, phase: load.Phase) -> None:
        """A gateway phase's answers, for the books."""
        self.answered_2xx += phase.http_2xx
        self.cache_hits += phase.cache_hits


@dataclass(frozen=True)
class Targets:
    """The same request, sent straight to the upstream and through the gateway
    (and, for the cache scenario, through the gateway with a caching key)."""

    scenario: str
    direct: load.Target
    through: load.Target
    cached: load.Target | None = None

    @property
    def gateway_targets(self) -> list[load.Target]:
        return [self.through] if self.cached is None else [self.through, self.cached]


@dataclass
class Measured:
    """One gateway target's measured phases, and daphne's CPU time over them."""

    target: load.Target
    phases: list[load.Phase] = field(default_factory=list)
    cpu_seconds: float = 0.0


async def benchmark(options: Options, upstream: stack.Server, gateway: stack.Server, keys: stack.Keys) -> Run:
    run = Run(comparisons=[])
    for scenario in options.scenarios:
        targets = targets_build(scenario, upstream, gateway, keys)
        if targets.cached is not None:
            await cache_warm(targets.cached, run)
        for concurrency in options.concurrency:
            run.comparisons.append(await interleaved_run(options, targets, concurrency, gateway, run))
    return run


def targets_build(scenario: str, upstream: stack.Server, gateway: stack.Server, keys: stack.Keys) -> Targets:
    stream = scenario == "stream"
    url = f"{gateway.url}/v1/chat/completions"
    direct = load.target_build("direct", f"{upstream.url}/v1/chat/completions", stack.UPSTREAM_MODEL, stream=stream)
    if scenario != "cache":
        through = load.target_build("gateway", url, stack.PUBLIC_MODEL, stream=stream, api_key=keys.forwarding)
        return Targets(scenario=scenario, direct=direct, through=through)
    # The same JSON body under both keys; each answer must say which path it
    # took, or the comparison would not be between forwarding and a hit.
    return Targets(
        scenario=scenario,
        direct=direct,
        through=load.target_build(
            "forwarded", url, stack.PUBLIC_MODEL, stream=False, api_key=keys.forwarding, expect_cache="bypass"
        ),
        cached=load.target_build(
            "cache hit", url, stack.PUBLIC_MODEL, stream=False, api_key=keys.caching, expect_cache="hit"
        ),
    )


async def cache_warm(target: load.Target, run: Run) -> None:
    """One request to fill the cache, then wait until the entry answers: it is
    stored in the background after the first answer, and a measured request
    that came too early would go upstream."""
    async with load.session_open(1) as session:
        first = await load.request_send(session, target)
        run.count(load.Phase(target=target.name, concurrency=1, samples=[first]))
        progress(f"cache warmed: the first request answered HTTP {first.status}, x-cache {first.cache or 'absent'}")
        if not 200 <= first.status < 300:
            raise RuntimeError(f"the cache could not be warmed: {first.error}")
        deadline = time.monotonic() + CACHE_READY_TIMEOUT_SECONDS
        sample, waited = first, 0
        while sample.cache != "hit":
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"no cache hit {CACHE_READY_TIMEOUT_SECONDS:.0f} s after the first request "
                    f"(last: HTTP {sample.status}, x-cache {sample.cache or 'absent'})"
                )
            await asyncio.sleep(CACHE_READY_POLL_SECONDS)
            sample, waited = await load.request_send(session, target), waited + 1
            run.count(load.Phase(target=target.name, concurrency=1, samples=[sample]))
        progress(f"cache ready: a hit after {waited} more request(s)")


async def interleaved_run(
    options: Options, targets: Targets, concurrency: int, gateway: stack.Server, run: Run
) -> report.Comparison:
    """Warm up every target, then alternate direct and gateway phases."""
    direct_phases: list[load.Phase] = []
    measured = [Measured(target) for target in targets.gateway_targets]
    # One session per target for all its phases: connections opened during
    # the warm-up are reused, so no measured request pays for a TCP handshake.
    async with contextlib.AsyncExitStack() as sessions:
        direct_session = await sessions.enter_async_context(load.session_open(concurrency))
        gateway_sessions = [await sessions.enter_async_context(load.session_open(concurrency)) for _ in measured]
        if options.warmup > 0:
            await load.phase_run(direct_session, targets.direct, concurrency, options.warmup)
            for m, session in zip(measured, gateway_sessions, strict=True):
                run.count(await load.phase_run(session, m.target, concurrency, options.warmup))
        for round_no in range(1, options.rounds + 1):
            direct_phases.append(await load.phase_run(direct_session, targets.direct, concurrency, options.duration))
            for m, session in zip(measured, gateway_sessions, strict=True):
                before = gateway.cpu_seconds()
                phase = await load.phase_run(session, m.target, concurrency, options.duration)
                m.cpu_seconds += gateway.cpu_seconds() - before
                m.phases.append(phase)
                run.count(phase)
            gateway_alive_check(gateway)
            rates = ", ".join(f"{m.target.name} {phase_rate(m.phases[-1])}" for m in measured)
            progress(
                f"{targets.scenario} c={concurrency} round {round_no}/{options.rounds}: "
                f"direct {phase_rate(direct_phases[-1])}, {rates}"
            )
    through, *cached = measured
    return report.Comparison(
        scenario=targets.scenario,
        concurrency=concurrency,
        direct=report.Stats.of(direct_phases),
        gateway=report.Stats.of(through.phases),
        gateway_cpu_seconds=through.cpu_seconds,
        cached=report.Stats.of(cached[0].phases) if cached else None,
        cached_cpu_seconds=cached[0].cpu_seconds if cached else 0.0,
    )


def phase_rate(phase: load.Phase) -> str:
    errors = phase.requests - len(phase.succeeded)
    return f"{len(phase.succeeded) / phase.elapsed:.0f} req/s" + (f" ({errors} errors)" if errors else "")


def gateway_alive_check(gateway: stack.Server) -> None:
    if gateway.process.poll() is not None:
        raise RuntimeError(f"the gateway exited with code {gateway.process.returncode}:\n{log_tail(gateway, 40)}")


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the books and the log -------------------------------------------------------


def books_check(gateway: stack.Server, database: Path, run: Run) -> bool:
    """Every 2xx must have left one usage record, before and after a SIGTERM;
    every answer from the cache, one flagged as a cache hit."""
    time.sleep(BOOKS_SETTLE_SECONDS)
    print(
        f"gateway requests answered 2xx (warm-ups included): {run.answered_2xx}, "
        f"of which from the cache: {run.cache_hits}"
    )
    settled = _books_line(f"usage rows {BOOKS_SETTLE_SECONDS:.0f} s after the load", database, run)
    started = time.monotonic()
    code = gateway.terminate()
    stopped_in = time.monotonic() - started
    exit_text = "killed after the timeout" if code is None else f"exit code {code}"
    final = _books_line(f"usage rows after SIGTERM ({exit_text}, {stopped_in:.1f} s)", database, run)
    spooled = sorted((database.parent / "usage-spool").glob("*.jsonl"))
    if spooled:
        lines = sum(len(path.read_bytes().splitlines()) for path in spooled)
        print(f"usage events spooled to disk at shutdown (not in the database): {lines}")
    return settled and final and code == 0


def _books_line(label: str, database: Path, run: Run) -> bool:
    rows = stack.usage_rows(database)
    mismatches = [
        f"{found - expected:+d} {name}"
        for name, found, expected in (
            ("rows", rows["rows"], run.answered_2xx),
            ("cache hits", rows["cache hits"], run.cache_hits),
        )
        if found != expected
    ]
    verdict = f"NOT reconciled ({', '.join(mismatches)})" if mismatches else "reconciled"
    details = ", ".join(f"{rows[k]} {k}" for k in ("2xx", "streams", "estimated", "disconnected", "cache hits"))
    print(f"{label}: {rows['rows']} ({details}): {verdict}")
    return not mismatches


def log_report(gateway: stack.Server) -> None:
    lines = gateway.log().splitlines()
    notable = [line for line in lines if any(word in line for word in NOTABLE_LOG_WORDS)]
    print(f"daphne log: {len(lines)} lines, {len(notable)} warnings or errors")
    for line in notable[:LOG_EXCERPT_LINES]:
        print(f"    {line}")
    if len(notable) > LOG_EXCERPT_LINES:
        print(f"    ... {len(notable) - LOG_EXCERPT_LINES} more")
    if lines:
        print("last lines:")
        for line in lines[-3:]:
            print(f"    {line}")


def log_tail(server: stack.Server, count: int) -> str:
    return "\n".join(server.log().splitlines()[-count:])


# --- output ----------------------------------------------------------------------


def header_print(options: Options) -> None:
    pinning = (
        f"daphne pinned to CPU {stack.GATEWAY_CPU}; fake upstream and load generator on CPU {stack.CLIENT_CPU}"
        if stack.PINNING
        else "no CPU pinning (fewer than 2 usable CPUs): numbers mix client and gateway"
    )
    print(f"{dt.datetime.now():%Y-%m-%d %H:%M}, {git_describe()}, Python {sys.version.split()[0]}")
    print(pinning)
    cache_phase = f", cache hit {options.duration:g} s in the cache scenario" if "cache" in options.scenarios else ""
    print(
        f"per scenario and concurrency: {options.warmup:g} s warm-up per target, then {options.rounds} x "
        f"(direct {options.duration:g} s, gateway {options.duration:g} s{cache_phase}), interleaved"
    )
    print("latencies over successful requests; + columns: gateway minus direct; CPU: daphne's user+system time")


def git_describe() -> str:
    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=stack.ROOT, capture_output=True, text=True, check=False)
        return result.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown commit"
    return commit + (" + uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def tables_print(comparisons: Sequence[report.Comparison], markdown: bool) -> None:
    for scenario in SCENARIOS:
        rows = [c for c in comparisons if c.scenario == scenario]
        if rows:
            print()
            print(f"### {SCENARIO_TITLES[scenario]}" if markdown else SCENARIO_TITLES[scenario])
            print()
            print(report.scenario_table(rows, markdown=markdown))
    if cache_costs := report.cache_cost_lines(comparisons):
        with section("Cache hit vs forwarded: the gateway's CPU time", markdown):
            for line in cache_costs:
                print(line)
    if errors := report.errors_describe(comparisons):
        with section("Errors", markdown):
            for line in errors:
                print(line)


@contextlib.contextmanager
def section(title: str, markdown: bool) -> Iterator[None]:
    """A titled block of plain lines; fenced in Markdown, where lines would run together."""
    print()
    print(f"### {title}" if markdown else title)
    print("```" if markdown else "")
    yield
    if markdown:
        print("```")


# --- main --------------------------------------------------------------------------


def exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    progress("terminated")
    raise SystemExit(128 + signum)  # unwinds through the finally that stops the servers


def main(argv: Sequence[str] | None = None) -> int:
    options = options_parse(argv)
    return bench_main("gateway-bench-", options.keep, lambda workdir, servers: _run(options, workdir, servers))


def bench_main(prefix: str, keep: bool, run: Callable[[Path, list[stack.Server]], int]) -> int:
    """A benchmark's shell: output in order with the progress lines, and every
    server it started stopped on the way out, whether it ends, fails, or gets
    SIGTERM or ^C."""
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    stack.pin_self()
    try:
        with stack.run_directory(prefix, keep=keep) as (workdir, servers):
            return run(workdir, servers)
    except KeyboardInterrupt:
        progress("interrupted")
        return 130


def _run(options: Options, workdir: Path, servers: list[stack.Server]) -> int:
    env = stack.gateway_env(workdir)
    upstream = stack.upstream_start(workdir)
    servers.append(upstream)
    progress("setting up a fresh database ...")
    keys = stack.database_create(env, upstream.port)
    gateway = stack.gateway_start(workdir, env)
    servers.append(gateway)
    with section("Gateway benchmark", options.markdown):
        header_print(options)
    run = asyncio.run(benchmark(options, upstream, gateway, keys))
    tables_print(run.comparisons, options.markdown)
    with section("Books", options.markdown):
        reconciled = books_check(gateway, workdir / "bench.sqlite3", run)
    with section("Gateway log", options.markdown):
        log_report(gateway)
    clean = reconciled and not any(
        c.direct.errors or c.gateway.errors or (c.cached and c.cached.errors) for c in run.comparisons
    )
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
