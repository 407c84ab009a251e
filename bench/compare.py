"""The gateway against its peers, on one core each: the README's performance table.

    python bench/compare.py                 # about six minutes, peers installed on first use
    python bench/compare.py --markdown      # the tables as Markdown
    python bench/compare.py --quick         # a smoke test
    python bench/compare.py --no-peers      # our servers only (no LiteLLM or Portkey install)

In one run, interleaved round by round so that whatever else the machine
does hits every system alike, the same request goes to the fake upstream
directly, through the gateway under uvicorn and under daphne (and granian
with --granian), through the LiteLLM proxy and through the Portkey gateway.
Every serving process is pinned to CPU 0; the fake upstream and the load
generator share CPU 1. The gateway runs with every feature on: its key has a
budget, a rate limit and a cap on requests in flight, and every request is
priced and metered. Then three more measurements on uvicorn: a cache hit
against a forwarded request, memory with 1,000 slow streams open, and
throughput with one and two worker processes. Last, the books: every
request the gateways answered must be one usage row. See bench/README.md.
"""

import argparse
import asyncio
import contextlib
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: `python bench/compare.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import load, peers, production, report, stack
from bench.run import bench_main, git_describe, progress, section

# (scenario, concurrency): the table's columns come from these four.
CELLS = (("json", 64), ("stream", 64), ("json", 1), ("stream", 1))
DIRECT = "direct"
OURS = "gateway"  # the prefix of our own rows
SLOW_STREAMS = 1000
SLOW_CHUNK_SECONDS = 0.5  # 20 chunks: a stream lasts 10 s, long enough to hold all 1,000 open at once
BOOKS_SETTLE_SECONDS = 2.0


@dataclass(frozen=True)
class Options:
    duration: float
    rounds: int
    warmup: float
    markdown: bool
    peers: bool
    granian: bool
    extras: bool
    keep: bool
    production: bool


def options_parse(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, help="Seconds per phase (default 5; 1 with --quick).")
    parser.add_argument("--rounds", type=int, help="Interleaved rounds (default 2; 1 with --quick).")
    parser.add_argument("--markdown", action="store_true", help="Print the tables as Markdown.")
    parser.add_argument("--no-peers", action="store_true", help="Leave out LiteLLM and Portkey.")
    parser.add_argument("--granian", action="store_true", help="Also serve the gateway with granian.")
    parser.add_argument("--no-extras", action="store_true", help="Only the table: no cache, memory or scaling.")
    parser.add_argument("--quick", action="store_true", help="A short run to check that everything works.")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary directory (database, logs).")
    parser.add_argument(
        "--no-production", action="store_true", help="Leave out the PostgreSQL + Redis rows (bench/production.py)."
    )
    args = parser.parse_args(argv)
    return Options(
        duration=args.duration or (1.0 if args.quick else 5.0),
        rounds=args.rounds or (1 if args.quick else 2),
        warmup=0.3 if args.quick else 1.0,
        markdown=args.markdown,
        peers=not args.no_peers,
        granian=args.granian,
        extras=not args.no_extras,
        keep=args.keep,
        production=not args.no_production,
    )


# --- the systems -------------------------------------------------------------------


@dataclass
class System:
    """Something to send the request to, and the process whose CPU time it costs."""

    name: str
    url: str
    model: str
    headers: dict[str, str] = field(default_factory=dict)
    server: stack.Server | None = None  # None: the upstream itself, not measured
    counts_in_books: bool = False  # our gateway: every 2xx must be a usage row
    phases: dict[tuple[str, int], list[load.Phase]] = field(default_factory=dict)
    cpu_seconds: dict[tuple[str, int], float] = field(default_factory=dict)

    def target(self, stream: bool, *, expect_cache: str = "", model: str = "") -> load.Target:
        return load.target_build(
            self.name, self.url, model or self.model, stream=stream, expect_cache=expect_cache, headers=self.headers
        )

    def cpu(self) -> float:
        return self.server.cpu_seconds() + _children_cpu(self.server) if self.server else 0.0

    def stats(self, cell: tuple[str, int]) -> report.Stats:
        return report.Stats.of(self.phases.get(cell, []))

    def cpu_ms_per_request(self, cell: tuple[str, int]) -> float | None:
        requests = sum(phase.requests for phase in self.phases.get(cell, []))
        return 1000 * self.cpu_seconds.get(cell, 0.0) / requests if self.server and requests else None


def _children_cpu(server: stack.Server) -> float:
    """granian serves from a worker process it forks: count it too."""
    total = 0.0
    for pid in peers.process_children(server.process.pid):
        with contextlib.suppress(OSError):  # it ended meanwhile
            total += stack.process_cpu_seconds(pid)
    return total


def gateway_system(name: str, server: stack.Server, key: str) -> System:
    return System(
        name=name,
        url=f"{server.url}/v1/chat/completions",
        model=stack.PUBLIC_MODEL,
        headers={"Authorization": f"Bearer {key}"},
        server=server,
        counts_in_books=True,
    )


def peer_system(peer: peers.Peer) -> System:
    return System(name=peer.name, url=peer.url, model=peer.model, headers=peer.headers, server=peer.server)


# --- measuring ---------------------------------------------------------------------


@dataclass
class Books:
    answered_2xx: int = 0  # by our gateways on SQLite, warm-ups included
    cache_hits: int = 0
    sent: dict[str, int] = field(default_factory=dict)  # requests per system, warm-ups included
    warm: dict[str, int] = field(default_factory=dict)  # of which warm-ups, where measured apart
    answered: dict[str, int] = field(default_factory=dict)  # 2xx per system, warm-ups included

    def count(self, system: System, phase: load.Phase) -> None:
        self.sent[system.name] = self.sent.get(system.name, 0) + phase.requests
        self.answered[system.name] = self.answered.get(system.name, 0) + phase.http_2xx
        if system.counts_in_books:
            self.answered_2xx += phase.http_2xx
            self.cache_hits += phase.cache_hits


async def table_measure(options: Options, systems: list[System], books: Books) -> None:
    """Warm every system up at every cell, then the rounds: each cell, each system in turn."""
    async with contextlib.AsyncExitStack() as stack_:
        sessions = {
            (s.name, c): await stack_.enter_async_context(load.session_open(c)) for s in systems for _, c in CELLS
        }
        for scenario, concurrency in CELLS:
            for system in systems:
                target = system.target(scenario == "stream")
                phase = await load.phase_run(sessions[system.name, concurrency], target, concurrency, options.warmup)
                books.count(system, phase)
        for round_no in range(1, options.rounds + 1):
            for cell in CELLS:
                scenario, concurrency = cell
                rates = []
                for system in systems:
                    before = system.cpu()
                    phase = await load.phase_run(
                        sessions[system.name, concurrency],
                        system.target(scenario == "stream"),
                        concurrency,
                        options.duration,
                    )
                    system.cpu_seconds[cell] = system.cpu_seconds.get(cell, 0.0) + system.cpu() - before
                    system.phases.setdefault(cell, []).append(phase)
                    books.count(system, phase)
                    rates.append(f"{system.name} {len(phase.succeeded) / phase.elapsed:.0f}")
                progress(f"round {round_no}/{options.rounds} {scenario} c={concurrency}: " + ", ".join(rates))


async def cache_measure(
    options: Options, forwarding: System, caching: System, missing: System, books: Books
) -> tuple[float, float, float]:
    """CPU ms per request, forwarded, answered from the cache and missed on a
    caching key (JSON, c=64), interleaved. The miss asks for `max-age=0`: the
    stored entry is too old, so the lookup misses and the answer goes upstream
    and is stored again, every time."""
    hit = caching.target(False, expect_cache="hit")
    async with load.session_open(1) as session:
        deadline = time.monotonic() + 10
        while True:  # the first answer fills the cache in the background
            sample = await load.request_send(session, hit)
            books.answered_2xx += 200 <= sample.status < 300
            books.cache_hits += sample.cache == "hit"
            if sample.cache == "hit" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
    cell = ("cache", 64)
    async with load.session_open(64) as one, load.session_open(64) as other, load.session_open(64) as third:
        pairs = (
            (forwarding, one, forwarding.target(False, expect_cache="bypass")),
            (caching, other, hit),
            (missing, third, missing.target(False, expect_cache="miss")),
        )
        for system, session, target in pairs:
            books.count(system, await load.phase_run(session, target, 64, options.warmup))
        for _ in range(options.rounds):
            for system, session, target in pairs:
                before = system.cpu()
                phase = await load.phase_run(session, target, 64, options.duration)
                system.cpu_seconds[cell] = system.cpu_seconds.get(cell, 0.0) + system.cpu() - before
                system.phases.setdefault(cell, []).append(phase)
                books.count(system, phase)
    return tuple(system.cpu_ms_per_request(cell) or 0.0 for system in (forwarding, caching, missing))  # type: ignore[return-value]


async def memory_measure(gateway: System, books: Books) -> tuple[int, float, int]:
    """Open SLOW_STREAMS streams at once; the gateway's RSS (MB) while all are
    open, and how many completed."""
    target = gateway.target(True, model="bench-slow")
    rss_before = _rss_mb(gateway.server)
    async with load.session_open(SLOW_STREAMS) as session:
        tasks = [asyncio.create_task(load.request_send(session, target)) for _ in range(SLOW_STREAMS)]
        # All open, none finished: half a stream's length after the last was sent.
        await asyncio.sleep(20 * SLOW_CHUNK_SECONDS / 2)
        peak = _rss_mb(gateway.server)
        samples = await asyncio.gather(*tasks)
    phase = load.Phase(target="slow", concurrency=SLOW_STREAMS, samples=list(samples))
    books.count(gateway, phase)
    progress(f"memory: {rss_before:.0f} MB idle, {peak:.0f} MB with {SLOW_STREAMS} streams open")
    return len(phase.succeeded), peak, SLOW_STREAMS


def _rss_mb(server: stack.Server | None) -> float:
    assert server is not None
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def scaling_measure(options: Options, one: System, two: System, books: Books) -> tuple[float, float]:
    """JSON req/s at c=64 with one worker process and with two (no pinning: both cores)."""
    cell = ("scaling", 64)
    async with load.session_open(64) as first, load.session_open(64) as second:
        for system, session in ((one, first), (two, second)):
            books.count(system, await load.phase_run(session, system.target(False), 64, options.warmup))
        for _ in range(options.rounds):
            for system, session in ((one, first), (two, second)):
                phase = await load.phase_run(session, system.target(False), 64, options.duration)
                system.phases.setdefault(cell, []).append(phase)
                books.count(system, phase)
    return one.stats(cell).rps, two.stats(cell).rps


# --- output ------------------------------------------------------------------------


def _ms(seconds: float | None, signed: bool = False) -> str:
    if seconds is None or math.isnan(seconds):
        return "-"
    return f"{seconds * 1000:+.2f} ms" if signed else f"{seconds * 1000:.2f} ms"


@dataclass(frozen=True)
class Row:
    name: str
    json_rps: float
    stream_rps: float
    added_p50: float | None
    added_ttfb: float | None
    tail: float
    cpu_ms: float | None
    errors: int


def rows_build(systems: list[System]) -> list[Row]:
    direct = next(s for s in systems if s.name == DIRECT)
    json1, stream1 = direct.stats(("json", 1)), direct.stats(("stream", 1))
    rows = []
    for s in systems:
        mine1, mine_stream1 = s.stats(("json", 1)), s.stats(("stream", 1))
        errors = sum(sum(s.stats(cell).errors.values()) for cell in CELLS)
        rows.append(
            Row(
                name=s.name,
                json_rps=s.stats(("json", 64)).rps,
                stream_rps=s.stats(("stream", 64)).rps,
                added_p50=None if s is direct else mine1.p50 - json1.p50,
                added_ttfb=None
                if s is direct or mine_stream1.ttfb_p50 is None or stream1.ttfb_p50 is None
                else mine_stream1.ttfb_p50 - stream1.ttfb_p50,
                tail=s.stats(("json", 64)).tail_ratio,
                cpu_ms=s.cpu_ms_per_request(("json", 64)),
                errors=errors,
            )
        )
    return rows


def table_print(rows: list[Row], markdown: bool) -> None:
    headers = [
        "system (one core)",
        "JSON req/s c=64",
        "streams/s c=64",
        "added p50 c=1 (JSON)",
        "added TTFB c=1 (stream)",
        "p99/p50 c=64",
        "CPU ms/req",
        "errors",
    ]
    body = [
        [
            r.name,
            f"{r.json_rps:.0f}",
            f"{r.stream_rps:.0f}",
            _ms(r.added_p50, True),
            _ms(r.added_ttfb, True),
            f"{r.tail:.1f}",
            f"{r.cpu_ms:.2f}" if r.cpu_ms is not None else "-",
            str(r.errors),
        ]
        for r in rows
    ]
    print(report.table_render(headers, body, markdown=markdown))


def ratios_print(rows: list[Row]) -> None:
    """Each of our rows against direct and against each peer, column by column."""
    ours = [r for r in rows if r.name.startswith(OURS)]
    others = [r for r in rows if not r.name.startswith(OURS)]
    for mine in ours:
        for other in others:
            parts = [
                f"JSON req/s x{_ratio(mine.json_rps, other.json_rps)}",
                f"streams/s x{_ratio(mine.stream_rps, other.stream_rps)}",
                f"p99/p50 x{_ratio(mine.tail, other.tail)}",
            ]
            if other.added_p50 is not None:
                parts.append(f"added p50 x{_ratio(mine.added_p50, other.added_p50)}")
                parts.append(f"added TTFB x{_ratio(mine.added_ttfb, other.added_ttfb)}")
            print(f"{mine.name} vs {other.name}: " + ", ".join(parts))


def _ratio(mine: float | None, other: float | None) -> str:
    if mine is None or other is None or not other or math.isnan(mine) or math.isnan(other):
        return "-"
    return f"{mine / other:.2f}"


def targets_check(rows: list[Row]) -> list[str]:
    """What the uvicorn row must beat: every peer on every column."""
    ours = next((r for r in rows if r.name == f"{OURS} (uvicorn)"), None)
    misses: list[str] = []
    for peer in (r for r in rows if not r.name.startswith(OURS) and r.name != DIRECT):
        if ours is None:
            break
        checks = [
            ("JSON req/s", ours.json_rps > peer.json_rps),
            ("streams/s", ours.stream_rps > peer.stream_rps),
            ("added p50", (ours.added_p50 or 0) < (peer.added_p50 or 0)),
            ("added TTFB", (ours.added_ttfb or 0) < (peer.added_ttfb or 0)),
            ("p99/p50", ours.tail < peer.tail),
        ]
        misses += [f"{name} not ahead of {peer.name}" for name, ahead in checks if not ahead]
    if ours is not None and not ours.tail <= 2.5:
        misses.append(f"p99/p50 {ours.tail:.1f} above 2.5")
    return misses


# --- main --------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    options = options_parse(argv)
    return bench_main("gateway-compare-", options.keep, lambda workdir, servers: _run(options, workdir, servers))


def _run(options: Options, workdir: Path, servers: list[stack.Server]) -> int:
    """The comparison; with the production rows when the machine has a
    PostgreSQL and a redis-server to give the run its own of each."""
    with contextlib.ExitStack() as exits:
        prod = None
        if options.production:
            try:
                prod = exits.enter_context(production.production_stack(workdir))
            except RuntimeError as error:
                progress(f"no production rows: {error}")
        return _compare(options, workdir, servers, prod)


def _compare(options: Options, workdir: Path, servers: list[stack.Server], prod: production.Production | None) -> int:
    env = stack.gateway_env(workdir)
    upstream = stack.upstream_start(workdir)
    slow = stack.upstream_start(workdir, slow_delay=SLOW_CHUNK_SECONDS, name="slow upstream")
    servers += [upstream, slow]
    progress("setting up a fresh database ...")
    keys = stack.database_create(env, upstream.port, slow_port=slow.port)
    systems = [System(name=DIRECT, url=f"{upstream.url}/v1/chat/completions", model=stack.UPSTREAM_MODEL)]
    for server_name in ("uvicorn", "daphne", *(["granian"] if options.granian else [])):
        server = stack.gateway_start(workdir, env, server=server_name)
        servers.append(server)
        systems.append(gateway_system(f"{OURS} ({server_name})", server, keys.forwarding))
    deployed = None if prod is None else production_system(prod, workdir, upstream.port, servers)
    if deployed is not None:
        systems.append(deployed[0])
    if options.peers:
        for start in (peers.litellm_start, peers.portkey_start):
            progress(f"starting {start.__name__.removesuffix('_start')} (installed on first use) ...")
            peer = start(workdir, upstream)
            servers.append(peer.server)
            systems.append(peer_system(peer))
    books = Books()
    with section("Gateway vs peers, one core each", options.markdown):
        print(
            f"{time.strftime('%Y-%m-%d %H:%M')}, {git_describe()}, Python {sys.version.split()[0]}, "
            f"{os.cpu_count()} CPUs; servers pinned to CPU {stack.GATEWAY_CPU}, fake upstream and load "
            f"generator on CPU {stack.CLIENT_CPU}"
            if stack.PINNING
            else "no CPU pinning"
        )
        print(
            f"{options.warmup:g} s warm-up per system and cell, then {options.rounds} rounds of "
            f"{options.duration:g} s phases, systems interleaved; key with budget, rate limit and metering"
        )
    idle = None if prod is None else prod.idle_rate()
    before = None if prod is None else prod.read()
    asyncio.run(table_measure(options, systems, books))
    rows = rows_build(systems)
    print()
    table_print(rows, options.markdown)
    with section("Ratios", options.markdown):
        ratios_print(rows)
    uvicorn = next(s for s in systems if s.name == f"{OURS} (uvicorn)")
    if prod is not None and before is not None and deployed is not None and idle is not None:
        deployed_print(options, prod, before, idle, deployed[0], uvicorn, books)
    if options.extras:
        extras_run(options, workdir, env, keys, uvicorn, servers, books)
        if prod is not None and deployed is not None and idle is not None:
            production_scaling(options, workdir, prod, idle, deployed[1], servers, books)
    with section("Books", options.markdown):
        reconciled = books_check(servers, systems, workdir, books)
        if prod is not None:
            reconciled = production_books_check(prod, books) and reconciled
    misses = targets_check(rows)
    with section("Targets", options.markdown):
        if misses:
            print("\n".join(misses))
        elif options.peers:
            print("the uvicorn row is ahead of every peer on every column, and its p99/p50 is within 2.5")
        else:
            print("p99/p50 within 2.5 (no peers in this run)")
    errors = sum(r.errors for r in rows if r.name.startswith(OURS) or r.name == DIRECT)
    return 0 if reconciled and not errors else 1


def extras_run(
    options: Options,
    workdir: Path,
    env: dict[str, str],
    keys: stack.Keys,
    uvicorn: System,
    servers: list[stack.Server],
    books: Books,
) -> None:
    caching = gateway_system(f"{OURS} (uvicorn, cache hit)", uvicorn.server, keys.caching)  # type: ignore[arg-type]
    missing = gateway_system(f"{OURS} (uvicorn, cache miss)", uvicorn.server, keys.caching)  # type: ignore[arg-type]
    missing.headers["Cache-Control"] = "max-age=0"
    forwarded_ms, hit_ms, miss_ms = asyncio.run(cache_measure(options, uvicorn, caching, missing, books))
    with section("A cache hit vs a forwarded request (uvicorn, JSON c=64)", options.markdown):
        print(
            f"gateway CPU per request: forwarded {forwarded_ms:.3f} ms, cache hit {hit_ms:.3f} ms, "
            f"cache miss on a caching key {miss_ms:.3f} ms: "
            f"a hit costs {100 * hit_ms / forwarded_ms:.0f}% of a forwarded request"
        )
    done, peak, opened = asyncio.run(memory_measure(uvicorn, books))
    with section(f"Memory with {SLOW_STREAMS} slow streams open (uvicorn)", options.markdown):
        print(f"RSS {peak:.0f} MB with {opened} streams of 10 s open at once; {done} completed with [DONE]")
    two_workers = stack.gateway_start(workdir, env, server="uvicorn", workers=2)
    one_worker = stack.gateway_start(workdir, env, server="uvicorn", workers=1, pinned_cpu=None)
    servers += [two_workers, one_worker]
    one = gateway_system(f"{OURS} (uvicorn, 1 process)", one_worker, keys.forwarding)
    two = gateway_system(f"{OURS} (uvicorn, 2 processes)", two_workers, keys.forwarding)
    rps_one, rps_two = asyncio.run(scaling_measure(options, one, two, books))
    with section("Scaling: uvicorn workers on both cores (load generator and upstream share them)", options.markdown):
        print(f"JSON req/s c=64: 1 process {rps_one:.0f}, 2 processes {rps_two:.0f} (x{rps_two / rps_one:.2f})")


# --- as deployed: PostgreSQL and Redis (bench/production.py) ------------------------

DEPLOYED = "PostgreSQL + Redis"


def production_system(
    prod: production.Production, workdir: Path, upstream_port: int, servers: list[stack.Server]
) -> tuple[System, stack.Keys]:
    """uvicorn on the run's own PostgreSQL database and Redis, pinned as the
    other rows are; its key has the same budget and limits."""
    progress("setting up a fresh PostgreSQL database ...")
    keys = stack.database_create(prod.env, upstream_port)
    server = stack.gateway_start(workdir, prod.env, server="uvicorn")
    servers.append(server)
    system = gateway_system(f"{OURS} (uvicorn, {DEPLOYED})", server, keys.forwarding)
    system.counts_in_books = False  # its rows are in PostgreSQL: production_books_check
    return system, keys


def deployed_print(
    options: Options,
    prod: production.Production,
    before: production.Reading,
    idle: float,
    deployed: System,
    embedded: System,
    books: Books,
) -> None:
    after = prod.read()
    with section(f"As deployed ({DEPLOYED}, one uvicorn process, the table's run)", options.markdown):
        print(
            f"every cell of the table, warm-ups included: {production.per_request(before, after, books.sent[deployed.name], idle)}"
        )
        json64 = ("json", 64)
        rps = deployed.stats(json64).rps / embedded.stats(json64).rps
        cpu_deployed, cpu_embedded = deployed.cpu_ms_per_request(json64), embedded.cpu_ms_per_request(json64)
        cpu = f"x{cpu_deployed / cpu_embedded:.2f}" if cpu_deployed and cpu_embedded else "-"
        print(
            f"against the embedded default (SQLite, in-process counters): JSON req/s c=64 x{rps:.2f}, CPU ms/req {cpu}"
        )


def production_scaling(
    options: Options,
    workdir: Path,
    prod: production.Production,
    idle: float,
    keys: stack.Keys,
    servers: list[stack.Server],
    books: Books,
) -> None:
    """JSON c=64 with one uvicorn worker and with two, on both cores (not
    pinned), each measured on its own so that the counts are its own."""
    lines = []
    for workers in (1, 2):
        server = stack.gateway_start(workdir, prod.env, server="uvicorn", workers=workers, pinned_cpu=None)
        servers.append(server)
        system = gateway_system(f"{OURS} (uvicorn, {DEPLOYED}, {workers} processes)", server, keys.forwarding)
        system.counts_in_books = False
        asyncio.run(_warm(options, system, books))
        before = prod.read()
        rps = asyncio.run(_rounds(options, system, books))
        lines.append(
            f"{workers} process{'es' if workers > 1 else ''}: JSON req/s c=64 {rps:.0f}; "
            + production.per_request(before, prod.read(), books.sent[system.name] - books.warm[system.name], idle)
        )
        server.terminate()  # its meter drains into the books before the next one runs
    with section(
        f"Scaling as deployed ({DEPLOYED}; workers on both cores, beside the load generator)", options.markdown
    ):
        print("\n".join(lines))


async def _warm(options: Options, system: System, books: Books) -> None:
    async with load.session_open(64) as session:
        books.count(system, await load.phase_run(session, system.target(False), 64, options.warmup))
    books.warm[system.name] = books.sent[system.name]


async def _rounds(options: Options, system: System, books: Books) -> float:
    cell = ("scaling", 64)
    async with load.session_open(64) as session:
        for _ in range(options.rounds):
            phase = await load.phase_run(session, system.target(False), 64, options.duration)
            system.phases.setdefault(cell, []).append(phase)
            books.count(system, phase)
    return system.stats(cell).rps


def production_books_check(prod: production.Production, books: Books) -> bool:
    """The PostgreSQL gateways' 2xx against their usage rows (all stopped by now)."""
    answered = sum(n for name, n in books.answered.items() if DEPLOYED in name)
    rows = prod.usage_rows()
    print(
        f"as deployed: {answered} requests answered 2xx, {rows} usage rows in PostgreSQL: "
        f"{'reconciled' if rows == answered else 'NOT reconciled'}"
    )
    return rows == answered


def books_check(servers: list[stack.Server], systems: list[System], workdir: Path, books: Books) -> bool:
    """Stop our gateways (SIGTERM: the meter drains), then one usage row per 2xx they answered."""
    time.sleep(BOOKS_SETTLE_SECONDS)
    for server in servers:
        if server.name.startswith(OURS):
            server.terminate()
    rows = stack.usage_rows(workdir / "bench.sqlite3")
    ok = rows["rows"] == books.answered_2xx and rows["cache hits"] == books.cache_hits
    print(
        f"our gateways answered {books.answered_2xx} requests 2xx ({books.cache_hits} from the cache); "
        f"usage rows: {rows['rows']} ({rows['cache hits']} cache hits): "
        f"{'reconciled' if ok else 'NOT reconciled'}"
    )
    return ok


if __name__ == "__main__":
    sys.exit(main())
