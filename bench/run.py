"""Benchmark the gateway against its own upstream, called directly.

    python bench/run.py                      # defaults: json and stream at c=1,16,64
    python bench/run.py --quick              # a smoke test of a few seconds
    python bench/run.py --markdown           # tables for the README

Each scenario alternates direct and gateway phases, so whatever else the
machine is doing hits both alike; the difference is what the gateway adds.
After the load, the usage ledger is checked against the requests answered.
See bench/README.md.
"""

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

if __package__ in (None, ""):  # run as a script: `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import load, report, stack  # noqa: E402

SCENARIOS = ("json", "stream")
SCENARIO_TITLES = {"json": "JSON (stream: false)", "stream": "Streaming (SSE, 20 content chunks)"}
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
    parser.add_argument("--rounds", type=int, help="Direct/gateway pairs per scenario (default 2; 1 with --quick).")
    parser.add_argument("--warmup", type=float, help="Seconds of unmeasured load per target first (default 1).")
    parser.add_argument("--concurrency", nargs="+", help="Levels, e.g. 1 16 64 or 1,16,64 (default 1,16,64).")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="Comma-separated: json, stream.")
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


@dataclass(frozen=True)
class Pair:
    """The same request, sent straight to the upstream and through the gateway."""

    scenario: str
    direct: load.Target
    through: load.Target


async def benchmark(options: Options, upstream: stack.Server, gateway: stack.Server, key: str) -> Run:
    run = Run(comparisons=[])
    for scenario in options.scenarios:
        stream = scenario == "stream"
        pair = Pair(
            scenario=scenario,
            direct=load.target_build("direct", f"{upstream.url}/v1/chat/completions", stack.UPSTREAM_MODEL,
                                     stream=stream),  # fmt: skip
            through=load.target_build("gateway", f"{gateway.url}/v1/chat/completions", stack.PUBLIC_MODEL,
                                      stream=stream, api_key=key),  # fmt: skip
        )
        for concurrency in options.concurrency:
            run.comparisons.append(await interleaved_run(options, pair, concurrency, gateway, run))
    return run


async def interleaved_run(
    options: Options, pair: Pair, concurrency: int, gateway: stack.Server, run: Run
) -> report.Comparison:
    """Warm up both targets, then alternate direct and gateway phases."""
    direct_phases: list[load.Phase] = []
    gateway_phases: list[load.Phase] = []
    cpu_seconds = 0.0
    # One session per target for all its phases: connections opened during
    # the warm-up are reused, so no measured request pays for a TCP handshake.
    async with load.session_open(concurrency) as direct_session, load.session_open(concurrency) as gateway_session:
        if options.warmup > 0:
            await load.phase_run(direct_session, pair.direct, concurrency, options.warmup)
            warm = await load.phase_run(gateway_session, pair.through, concurrency, options.warmup)
            run.answered_2xx += warm.http_2xx
        for round_no in range(1, options.rounds + 1):
            direct_phases.append(await load.phase_run(direct_session, pair.direct, concurrency, options.duration))
            before = gateway.cpu_seconds()
            phase = await load.phase_run(gateway_session, pair.through, concurrency, options.duration)
            cpu_seconds += gateway.cpu_seconds() - before
            gateway_phases.append(phase)
            run.answered_2xx += phase.http_2xx
            gateway_alive_check(gateway)
            progress(f"{pair.scenario} c={concurrency} round {round_no}/{options.rounds}: "
                     f"direct {phase_rate(direct_phases[-1])}, gateway {phase_rate(phase)}")  # fmt: skip
    return report.Comparison(
        scenario=pair.scenario,
        concurrency=concurrency,
        direct=report.Stats.of(direct_phases),
        gateway=report.Stats.of(gateway_phases),
        gateway_cpu_seconds=cpu_seconds,
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


def books_check(gateway: stack.Server, database: Path, answered: int) -> bool:
    """Every 2xx must have left one usage record, before and after a SIGTERM."""
    time.sleep(BOOKS_SETTLE_SECONDS)
    print(f"gateway requests answered 2xx (warm-ups included): {answered}")
    settled = _books_line(f"usage rows {BOOKS_SETTLE_SECONDS:.0f} s after the load", database, answered)
    started = time.monotonic()
    code = gateway.terminate()
    stopped_in = time.monotonic() - started
    exit_text = "killed after the timeout" if code is None else f"exit code {code}"
    final = _books_line(f"usage rows after SIGTERM ({exit_text}, {stopped_in:.1f} s)", database, answered)
    spooled = sorted((database.parent / "usage-spool").glob("*.jsonl"))
    if spooled:
        lines = sum(len(path.read_bytes().splitlines()) for path in spooled)
        print(f"usage events spooled to disk at shutdown (not in the database): {lines}")
    return settled and final and code == 0


def _books_line(label: str, database: Path, answered: int) -> bool:
    rows = stack.usage_rows(database)
    reconciled = rows["rows"] == answered
    verdict = "reconciled" if reconciled else f"NOT reconciled ({rows['rows'] - answered:+d})"
    details = ", ".join(f"{rows[k]} {k}" for k in ("2xx", "streams", "estimated", "disconnected"))
    print(f"{label}: {rows['rows']} ({details}): {verdict}")
    return reconciled


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
    print(f"per scenario and concurrency: {options.warmup:g} s warm-up per target, then {options.rounds} x "
          f"(direct {options.duration:g} s, gateway {options.duration:g} s), interleaved")  # fmt: skip
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


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    progress("terminated")
    raise SystemExit(128 + signum)  # unwinds through the finally that stops the servers


def main(argv: Sequence[str] | None = None) -> int:
    options = options_parse(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # in order with the progress lines
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    stack.pin_self()
    workdir = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    servers: list[stack.Server] = []
    try:
        env = stack.gateway_env(workdir)
        upstream = stack.upstream_start(workdir)
        servers.append(upstream)
        progress("setting up a fresh database ...")
        key = stack.database_create(env, upstream.port)
        gateway = stack.gateway_start(workdir, env)
        servers.append(gateway)
        with section("Gateway benchmark", options.markdown):
            header_print(options)
        run = asyncio.run(benchmark(options, upstream, gateway, key))
        tables_print(run.comparisons, options.markdown)
        with section("Books", options.markdown):
            reconciled = books_check(gateway, workdir / "bench.sqlite3", run.answered_2xx)
        with section("Gateway log", options.markdown):
            log_report(gateway)
        clean = reconciled and not any(c.direct.errors or c.gateway.errors for c in run.comparisons)
        return 0 if clean else 1
    except KeyboardInterrupt:
        progress("interrupted")
        return 130
    finally:
        for server in reversed(servers):
            server.terminate()
        if options.keep:
            progress(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
