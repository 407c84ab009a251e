"""The system under test: a fresh SQLite database, the fake upstream and daphne.

Everything runs from a temporary directory, so a benchmark never touches the
project's own database, spool or logs. The gateway is pinned to CPU 0 and
the fake upstream to CPU 1 (where the load generator runs too): the gateway
gets a core of its own, and its CPU time per request is not inflated by
competing with the client for it.
"""

import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GATEWAY_CPU = 0
CLIENT_CPU = 1  # the load generator and the fake upstream
PUBLIC_MODEL = "bench-model"
UPSTREAM_MODEL = "fake-model"
# Longer than any run, so no entry expires while the cache scenario measures.
CACHE_TTL_SECONDS = 3600
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 40.0  # above the gateway's default 25 s shutdown grace


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Pinning needs both CPUs; without them everything shares what there is.
PINNING = {GATEWAY_CPU, CLIENT_CPU} <= os.sched_getaffinity(0) and shutil.which("taskset") is not None


def pinned(cpu: int, argv: list[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *argv] if PINNING else argv


def pin_self() -> None:
    """The load generator runs beside the fake upstream, off the gateway's CPU."""
    if PINNING:
        os.sched_setaffinity(0, {CLIENT_CPU})


def gateway_env(workdir: Path) -> dict[str, str]:
    """The environment shared by the setup commands and daphne."""
    env = {k: v for k, v in os.environ.items() if k != "DEBUG"}
    env.update(
        DATABASE_URL=f"sqlite:///{workdir / 'bench.sqlite3'}",
        # Explicit, because a `.env` beside manage.py could turn DEBUG on
        # (the real environment wins over it) and DEBUG logs every query.
        DEBUG="false",
        # A failed flush at shutdown spools here, not into the project's var/.
        BILLING_SPOOL_DIR=str(workdir / "usage-spool"),
    )
    return env


def manage(env: dict[str, str], *args: str) -> str:
    """Run one management command; its stdout, or the whole failure."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


@dataclass(frozen=True)
class Keys:
    """Two keys of the same tenant: one forwards every request, one may answer from the cache."""

    forwarding: str
    caching: str


# Every feature on: a budget to reserve against, rate limits to count, a cap
# on requests in flight; all far above what a run sends, so none refuses.
KEY_LIMITS = (
    "--budget",
    "1000000",
    "--budget-period",
    "month",
    "--rpm",
    "100000000",
    "--tpm",
    "2000000000",  # PostgreSQL's integer column holds up to 2**31 - 1
    "--max-parallel",
    "2000",
)


def database_create(env: dict[str, str], upstream_port: int, *, slow_port: int | None = None) -> Keys:
    """Migrate and configure a tenant, its keys, a provider, route and price
    (and `bench-slow`, routed to a slow upstream's fake-slow streams)."""
    manage(env, "migrate", "--noinput", "-v", "0")
    manage(env, "tenant_create", "bench")
    keys = Keys(
        forwarding=_key_create(env, "bench", *KEY_LIMITS),
        caching=_key_create(env, "bench-cache", *KEY_LIMITS, "--cache-ttl", str(CACHE_TTL_SECONDS)),
    )
    manage(
        env,
        "provider_create",
        "fake",
        "--kind",
        "openai",
        "--base-url",
        f"http://127.0.0.1:{upstream_port}/v1",
        "--api-key",
        "sk-fake",
    )
    manage(env, "route_create", PUBLIC_MODEL, "--provider", "fake", "--upstream-model", UPSTREAM_MODEL)
    manage(env, "price_set", UPSTREAM_MODEL, "--input", "0.15", "--output", "0.60")
    if slow_port is not None:
        manage(
            env,
            "provider_create",
            "slow",
            "--kind",
            "openai",
            "--base-url",
            f"http://127.0.0.1:{slow_port}/v1",
            "--api-key",
            "sk-fake",
        )
        manage(env, "route_create", "bench-slow", "--provider", "slow", "--upstream-model", "fake-slow")
        manage(env, "price_set", "fake-slow", "--input", "0.15", "--output", "0.60")
    return keys


def _key_create(env: dict[str, str], name: str, *options: str) -> str:
    return manage(env, "key_create", "bench", "--name", name, *options).strip().splitlines()[-1]


@dataclass
class Server:
    """A subprocess serving HTTP on 127.0.0.1:port, its output in a log file."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(cls, name: str, argv: list[str], port: int, env: dict[str, str], log_path: Path) -> "Server":
        with log_path.open("wb") as log:
            process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        return cls(name=name, port=port, process=process, log_path=log_path)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_listening(self) -> None:
        """Until the port accepts connections (the fake upstream has no health page)."""
        self._wait(lambda: _connects(self.port))

    def wait_healthy(self) -> None:
        self._wait(lambda: _answers_200(self.url + "/healthz"))

    def _wait(self, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.log()}")
            if ready():
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start in {START_TIMEOUT_SECONDS:.0f}s:\n{self.log()}")

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the process, all threads included."""
        return process_cpu_seconds(self.process.pid)

    def terminate(self) -> int | None:
        """SIGTERM and wait, as an orchestrator would; the exit code (None if it had to be killed)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, all threads included."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # Fields after the command name, which may itself contain spaces or ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def run_directory(prefix: str, *, keep: bool) -> Iterator[tuple[Path, list[Server]]]:
    """A scratch directory and the list of servers a run starts in it: on the
    way out the servers are stopped (last started first) and the directory
    removed, unless `keep`."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    servers: list[Server] = []
    try:
        yield workdir, servers
    finally:
        for server in reversed(servers):
            server.terminate()
        if keep:
            print(f"kept {workdir}", file=sys.stderr, flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def upstream_start(workdir: Path, *, slow_delay: float | None = None, name: str = "fake upstream") -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "proxy.tests.fake_upstream", "--port", str(port)]
    if slow_delay is not None:
        argv += ["--slow-delay", str(slow_delay)]
    server = Server.start(name, pinned(CLIENT_CPU, argv), port, dict(os.environ), workdir / f"upstream-{port}.log")
    server.wait_listening()
    return server


def gateway_start(
    workdir: Path,
    env: dict[str, str],
    *,
    server: str = "daphne",
    workers: int = 1,
    pinned_cpu: int | None = GATEWAY_CPU,
) -> Server:
    """The gateway under daphne, uvicorn (uvloop, httptools) or granian, as
    deployed: no access log. Pinned to one CPU unless pinned_cpu is None."""
    port = free_port()
    app = "gateway.asgi:application"
    argv = {
        "daphne": ["daphne", "-v", "0", "-b", "127.0.0.1", "-p", str(port), app],
        "uvicorn": [
            "uvicorn",
            app,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
            "--workers",
            str(workers),
        ],
        "granian": [
            "granian",
            "--interface",
            "asgi",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--no-ws",
            "--loop",
            "uvloop",
            "--log-level",
            "warning",
            app,
        ],
    }[server]
    command = [sys.executable, "-m", *argv]
    if pinned_cpu is not None:
        command = pinned(pinned_cpu, command)
    suffix = f", {workers} processes" if workers > 1 else ""
    started = Server.start(f"gateway ({server}{suffix})", command, port, env, workdir / f"{server}-{port}.log")
    started.wait_healthy()
    return started


def usage_rows(database: Path) -> dict[str, int]:
    """The ledger's row counts, read straight from the SQLite file."""
    with contextlib.closing(sqlite3.connect(database, timeout=20)) as db:
        total, ok, streams, estimated, disconnected, hits = db.execute(
            "SELECT count(*), count(*) FILTER (WHERE status_code BETWEEN 200 AND 299), "
            "count(*) FILTER (WHERE stream), count(*) FILTER (WHERE usage_estimated), "
            "count(*) FILTER (WHERE client_disconnected), count(*) FILTER (WHERE cache_hit) "
            "FROM billing_usagerecord"
        ).fetchone()
    return {
        "rows": total,
        "2xx": ok,
        "streams": streams,
        "estimated": estimated,
        "disconnected": disconnected,
        "cache hits": hits,
    }


def _connects(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:  # URLError included
        return False
