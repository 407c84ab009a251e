"""The usage journal: an answered request's usage survives SIGKILL, and a replay never counts twice."""

import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from accounts.models import ApiKey, Tenant
from accounts.services import api_key_issue, tenant_create
from billing.journal import UsageJournal, orphaned_segments
from billing.meter import UsageMeter
from billing.models import UsageRecord
from billing.spool import usage_journal_replay
from billing.tests.test_meter import event, owned
from conftest import IssuedKey, Ledger
from proxy.tests.live import LiveGateway

REQUESTS = 30
CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def owner() -> tuple[Tenant, ApiKey]:
    tenant = tenant_create(slug="journaled")
    return tenant, api_key_issue(tenant=tenant, name="journal")[1]


@pytest.fixture
def journal_dir(settings: Any, tmp_path: Path) -> Path:
    settings.BILLING_JOURNAL_DIR = tmp_path / "journal"
    return settings.BILLING_JOURNAL_DIR


def segments(folder: Path) -> list[Path]:
    return sorted(folder.glob("journal-*.jsonl"))


@pytest.mark.django_db
def test_a_pushed_event_is_on_disk_before_any_flush_and_gone_once_stored(
    journal_dir: Path, owner: tuple[Tenant, ApiKey]
) -> None:
    meter = UsageMeter()
    meter.push(owned(owner, "req-journaled"))
    [segment] = segments(journal_dir)
    assert orjson.loads(segment.read_bytes())["request_id"] == "req-journaled"
    assert meter.flush_sync() == 1
    assert segments(journal_dir) == []  # trimmed once the database has it


@pytest.mark.django_db
def test_a_failed_flush_keeps_the_segment_until_a_later_flush_stores_it(
    journal_dir: Path, owner: tuple[Tenant, ApiKey], monkeypatch: Any
) -> None:
    from billing import spool as spool_module

    meter = UsageMeter()
    meter.push(owned(owner, "req-kept"))
    with monkeypatch.context() as patched:
        patched.setattr(spool_module, "usage_events_store", _database_down)
        with pytest.raises(OSError):
            meter.flush_sync()
    assert len(segments(journal_dir)) == 1
    meter.push(owned(owner, "req-later"))
    assert meter.flush_sync() == 2
    assert segments(journal_dir) == []


def test_a_living_process_segment_is_never_replayed(journal_dir: Path) -> None:
    journal = UsageJournal(journal_dir)
    with journal.lock:
        journal.append(event("req-alive"))
    assert orphaned_segments(journal_dir) == []


@pytest.mark.django_db
def test_replaying_a_dead_process_journal_stores_each_request_once(
    journal_dir: Path, owner: tuple[Tenant, ApiKey]
) -> None:
    # Killed between storing its flush and trimming the segment: one event is
    # in the books already, the other only on disk.
    meter = UsageMeter()
    meter.push(owned(owner, "req-stored"))
    meter.flush_sync()
    dead_process_journal(journal_dir, [owned(owner, "req-stored"), owned(owner, "req-on-disk-only")])

    assert usage_journal_replay() == 2
    assert sorted(UsageRecord.objects.values_list("request_id", flat=True)) == ["req-on-disk-only", "req-stored"]
    assert segments(journal_dir) == []
    assert usage_journal_replay() == 0


def dead_process_journal(folder: Path, events: list[Any]) -> None:
    """Journal `events` from a child process that is then killed with SIGKILL."""
    lines = b"".join(orjson.dumps(e, option=orjson.OPT_APPEND_NEWLINE) for e in events)
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from billing.journal import UsageJournal
        journal = UsageJournal.__new__(UsageJournal)
        UsageJournal.__init__(journal, __import__("pathlib").Path({str(folder)!r}))
        journal._start()
        path, fd = journal._segment_create()
        os.write(fd, sys.stdin.buffer.read())
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    child = subprocess.run([sys.executable, "-c", script], input=lines, check=False)
    assert child.returncode == -signal.SIGKILL


def _database_down(events: Any, **_: Any) -> None:
    raise OSError("database is down")


# --- the real server, killed -------------------------------------------------------------


@pytest.fixture
def start_gateway(gateway_config: None) -> Iterator[Callable[..., LiveGateway]]:
    started: list[LiveGateway] = []

    def start() -> LiveGateway:
        # A flush interval longer than the test: only the journal can save these.
        started.append(LiveGateway(env={"BILLING_METER_FLUSH_SECONDS": "60"}).start())
        return started[-1]

    yield start
    for gateway in started:
        if gateway.process and gateway.process.poll() is None:
            gateway.terminate()


def test_every_request_answered_before_a_sigkill_is_in_the_books_after_the_restart(
    start_gateway: Callable[..., LiveGateway], key: IssuedKey, ledger: Ledger
) -> None:
    gateway = start_gateway()
    with httpx.Client(base_url=gateway.url, headers=key.headers, timeout=20) as client:
        answered = [client.post("/v1/chat/completions", json=CHAT) for _ in range(REQUESTS)]
    assert [r.status_code for r in answered] == [200] * REQUESTS
    assert gateway.process is not None
    gateway.process.send_signal(signal.SIGKILL)
    gateway.process.wait(10)
    assert ledger.records(key.key_id) == []  # all of it was in the dead process's memory

    start_gateway()  # replays the dead process's journal before its first flush
    records = ledger.wait(key.key_id, REQUESTS)
    assert sorted(r.request_id for r in records) == sorted(r.headers["x-request-id"] for r in answered)
    assert all(r.status_code == 200 and r.cost_nanos > 0 for r in records)
