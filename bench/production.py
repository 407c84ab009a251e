"""The gateway as deployed: PostgreSQL and Redis, for `make bench`'s production rows.

The bench makes what it measures its own: a fresh database on the machine's
PostgreSQL (BENCH_POSTGRES_URL, an administrator's URL; the `postgres`
superuser on 127.0.0.1 by default), dropped afterwards, and a redis-server
on a free port (bench.redis_counts), stopped afterwards. Nobody else uses
either, so Redis's `INFO commandstats` and PostgreSQL's `pg_stat_database`
count this gateway's commands and transactions alone, and the bench prints
them per request beside the throughput.

PostgreSQL publishes a backend's counts when it has been idle a while (up
to ten seconds in PostgreSQL 15), so a reading waits that long first.
"""

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench import stack
from bench.redis_counts import Counts, commandstats, gateway_scripts, private_redis, scripted_commands

ADMIN_URL_DEFAULT = "postgres://postgres@127.0.0.1:5432/postgres"
STATS_PUBLISHED_SECONDS = 11.0  # PGSTAT_IDLE_INTERVAL (10 s) and a margin


@dataclass(frozen=True)
class Reading:
    """Redis's command counts and the database's transactions, at one moment."""

    redis_calls: dict[str, int]
    transactions: int
    at: float  # time.monotonic()


@dataclass
class Production:
    admin_url: str
    database: str
    redis_url: str
    env: dict[str, str]

    def read(self) -> Reading:
        time.sleep(STATS_PUBLISHED_SECONDS)
        with _connect(self.admin_url) as db:
            row = db.execute(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s", (self.database,)
            ).fetchone()
        return Reading(commandstats(self.redis_url), int(row[0]) if row else 0, time.monotonic())

    def idle_rate(self) -> float:
        """Transactions per second with no traffic (the config poll, the
        meter's and the periodic tasks' own): two readings apart."""
        first = self.read()
        second = self.read()
        return (second.transactions - first.transactions) / (second.at - first.at)

    def usage_rows(self) -> int:
        with _connect(self.env["DATABASE_URL"]) as db:
            row = db.execute("SELECT count(*) FROM billing_usagerecord").fetchone()
        return int(row[0]) if row else 0


def per_request(before: Reading, after: Reading, requests: int, idle_rate: float) -> str:
    """Redis round trips and commands, and PostgreSQL transactions, per
    request; the transactions also less what the gateway makes idle over the
    same time (`idle_rate` per second)."""
    if not requests:
        return "no requests"
    counts = Counts.between(before.redis_calls, after.redis_calls, scripted_commands(*gateway_scripts()))
    transactions = after.transactions - before.transactions
    beyond_idle = transactions - idle_rate * (after.at - before.at)
    return (
        f"Redis {counts.round_trips / requests:.2f} round trips and {counts.commands / requests:.1f} commands, "
        f"PostgreSQL {transactions / requests:.3f} transactions per request ({beyond_idle / requests:.3f} beyond "
        f"the {idle_rate:.1f} per second it makes idle; {requests} requests)"
    )


@contextlib.contextmanager
def production_stack(workdir: Path) -> Iterator[Production]:
    """A database and a Redis of the run's own, and the gateway's environment
    for them; raises RuntimeError when the machine has neither to offer."""
    admin_url = os.environ.get("BENCH_POSTGRES_URL", ADMIN_URL_DEFAULT)
    database = f"bench_{uuid.uuid4().hex[:12]}"
    try:
        with _connect(admin_url) as db:
            db.execute(f'CREATE DATABASE "{database}"')
    except Exception as error:  # no server, no rights: the run goes on without the production rows
        raise RuntimeError(f"no PostgreSQL at {_safe(admin_url)}: {error}") from error
    try:
        with private_redis() as redis_url:
            env = stack.gateway_env(workdir)
            env.update(
                DATABASE_URL=_with_database(admin_url, database),
                REDIS_URL=redis_url,
                # Its own journal and spool: a start replays what dead processes
                # left there, and theirs belong to the SQLite books.
                BILLING_SPOOL_DIR=str(workdir / "usage-spool-postgres"),
                BILLING_JOURNAL_DIR=str(workdir / "usage-journal-postgres"),
            )
            yield Production(admin_url, database, redis_url, env)
    finally:
        with _connect(admin_url) as db:
            db.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _connect(url: str) -> Any:
    import psycopg

    return psycopg.connect(url, autocommit=True)


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def _safe(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 5432}"
