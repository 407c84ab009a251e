"""Redis commands per request, as Redis itself counts them.

`INFO commandstats` counts every command Redis ran, including each
`redis.call` inside a script, server-wide. So the counts are taken on a
Redis of the run's own (`private_redis`: the machine's redis-server on a
free port), where the gateway is the only client, and split in two:

* round trips: the commands a client sent, that is every script call
  (EVAL, EVALSHA) and every command that no script of the gateway's runs;
* commands: everything Redis executed, script internals included (the
  issue's "8 commands per request" counted them this way).

A command that both a client and a script send (a cache GET, say) is
counted as a script's, so "round trips" is a floor when such a command
appears in `other`; the gateway's limits and budgets send none.
"""

import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SCRIPT_CALLS = frozenset({"eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"})
# Commands a client sends to open a connection or to look: not a request's.
HOUSEKEEPING = frozenset({"hello", "select", "client|setinfo", "ping", "info", "config|resetstat", "script|load"})


def commandstats(url: str) -> dict[str, int]:
    """`INFO commandstats` as {command: calls}."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        raw = client.execute_command("INFO", "commandstats")
    finally:
        client.close()
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    calls = {}
    for match in re.finditer(r"cmdstat_([^:]+):calls=(\d+)", text):
        calls[match.group(1)] = int(match.group(2))
    if not calls and isinstance(raw, dict):  # redis-py parsed it
        calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in raw.items()}
    return calls


def scripted_commands(*scripts: str) -> frozenset[str]:
    """The commands these Lua scripts run (`redis.call('NAME', ...)`)."""
    names: set[str] = set()
    for script in scripts:
        names.update(m.lower() for m in re.findall(r"redis\.call\(\s*'(\w+)'", script))
    return frozenset(names)


def gateway_scripts() -> tuple[str, ...]:
    """The source of every module of the gateway that may hold a script."""
    root = Path(__file__).resolve().parent.parent
    return tuple(
        path.read_text()
        for app in ("accounts", "billing", "cachestore", "gateway", "proxy")
        for path in (root / app).rglob("*.py")
        if "tests" not in path.parts and "redis.call" in path.read_text()
    )


@dataclass(frozen=True)
class Counts:
    """What Redis ran between two readings."""

    calls: dict[str, int]
    scripted: frozenset[str]

    @classmethod
    def between(cls, before: dict[str, int], after: dict[str, int], scripted: frozenset[str]) -> "Counts":
        delta = {name: after.get(name, 0) - before.get(name, 0) for name in after}
        return cls({k: v for k, v in delta.items() if v > 0 and k not in HOUSEKEEPING}, scripted)

    @property
    def round_trips(self) -> int:
        return sum(n for name, n in self.calls.items() if name in SCRIPT_CALLS or name not in self.scripted)

    @property
    def commands(self) -> int:
        return sum(self.calls.values())

    @property
    def other(self) -> dict[str, int]:
        """Commands sent outside any script (none, for limits and budgets)."""
        return {k: v for k, v in self.calls.items() if k not in SCRIPT_CALLS and k not in self.scripted}

    def per_request(self, requests: int) -> str:
        parts = ", ".join(f"{n / requests:.2f} {name.upper()}" for name, n in sorted(self.calls.items()))
        return f"{self.round_trips / requests:.2f} round trips, {self.commands / requests:.2f} commands ({parts})"


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server of this run's own on a free port (no persistence);
    yields its URL. Raises RuntimeError when the machine has no redis-server."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("no redis-server on this machine")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    with tempfile.TemporaryDirectory(prefix="gw-redis-") as folder:
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", folder],
            stdout=(Path(folder) / "log").open("wb"),
            stderr=subprocess.STDOUT,
            # Any core, not the bench's own pinning: Redis stands for a server
            # of its own, not for a share of the load generator's core.
            preexec_fn=lambda: os.sched_setaffinity(0, range(os.cpu_count() or 1)),
        )
        url = f"redis://127.0.0.1:{port}/0"
        try:
            _wait_answers(url, process)
            yield url
        finally:
            process.terminate()
            process.wait(10)


def _wait_answers(url: str, process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    import redis

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("redis-server exited at start")
        try:
            redis.Redis.from_url(url).ping()
            return
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError(f"redis-server did not answer within {timeout}s")
