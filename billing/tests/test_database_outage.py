"""A database outage with a SIGTERM in it loses no usage and holds no shutdown up.

The gateway reaches the real PostgreSQL through a TCP proxy of the test's
own, which cuts or hangs it; the next process, on a healthy database,
stores what the stopped one left on disk.
"""

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from conftest import IssuedKey, Ledger
from proxy.tests import live
from proxy.tests.live import LiveGateway
from proxy.tests.tcp_proxy import TcpProxy

CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
ANSWERED_DURING_THE_OUTAGE = 30
GRACE = 2.0


def postgres() -> tuple[str, int] | None:
    url = urlsplit(os.environ.get("DATABASE_URL", ""))
    return (url.hostname or "127.0.0.1", url.port or 5432) if url.scheme.startswith("postgres") else None


pytestmark = pytest.mark.skipif(postgres() is None, reason="the PostgreSQL run (DATABASE_URL=postgres://...)")


@pytest.fixture
def database() -> Iterator[TcpProxy]:
    host_port = postgres()
    assert host_port is not None
    proxy = TcpProxy(*host_port).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def gateway_on(gateway_config: None, tmp_path: Path) -> Iterator[Callable[..., LiveGateway]]:
    started: list[LiveGateway] = []

    def start(**env: str) -> LiveGateway:
        disk = {"BILLING_SPOOL_DIR": str(tmp_path / "spool"), "BILLING_JOURNAL_DIR": str(tmp_path / "journal")}
        started.append(LiveGateway(env={**disk, **env}).start())
        return started[-1]

    yield start
    for gateway in started:
        if gateway.process and gateway.process.poll() is None:
            gateway.process.kill()


@pytest.mark.parametrize("fault", ["cut", "hang"])
def test_a_sigterm_during_a_database_outage_ends_within_the_grace_and_the_next_process_stores_every_request(
    gateway_on: Callable[..., LiveGateway],
    database: TcpProxy,
    key: IssuedKey,
    ledger: Ledger,
    tmp_path: Path,
    fault: str,
) -> None:
    url = urlsplit(live.test_database_url())
    through = url._replace(netloc=url.netloc.replace(f":{url.port}", f":{database.port}")).geturl()
    gateway = gateway_on(
        DATABASE_URL=through,
        DATABASE_CONNECT_TIMEOUT="1",
        DATABASE_POOL_TIMEOUT="1",
        GATEWAY_SHUTDOWN_GRACE_SECONDS=str(GRACE),
        BILLING_SHUTDOWN_FLUSH_MIN_SECONDS="1",
    )
    with httpx.Client(base_url=gateway.url, headers=key.headers, timeout=20) as client:
        first = client.post("/v1/chat/completions", json=CHAT)
        ledger.wait(key.key_id, 1)  # warm, and the writer has its connection
        getattr(database, fault)()
        during = [client.post("/v1/chat/completions", json=CHAT) for _ in range(ANSWERED_DURING_THE_OUTAGE)]
    assert [r.status_code for r in [first, *during]] == [200] * (1 + ANSWERED_DURING_THE_OUTAGE)

    started = time.monotonic()
    gateway.terminate(timeout=30)
    assert time.monotonic() - started < GRACE + 8  # not a connection attempt per event
    assert "usage the database did not take waits on disk" in gateway.log()
    spool = tmp_path / "spool"
    assert not [p.name for p in spool.glob("*") if p.suffix in (".refused", ".bad")] if spool.exists() else True

    gateway_on()  # a healthy database: replays the journal and the spool before its first flush
    records = ledger.wait(key.key_id, 1 + ANSWERED_DURING_THE_OUTAGE)
    assert sorted(r.request_id for r in records) == sorted(r.headers["x-request-id"] for r in [first, *during])
