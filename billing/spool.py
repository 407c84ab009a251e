"""Usage left on disk, and storing it: the shutdown spool, the events the
database refused (set aside in `.refused` files) and the journals of
processes that died, all replayed into the books in batches.

The meter (billing.meter) stores its batches through `store_split` too: a
batch the database refuses is split in halves until the events it refuses
are found, and only those are set aside. `request_id` is unique and writes
skip what is stored, so a replayed or retried batch never counts twice.
"""

import dataclasses
import datetime as dt
import logging
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

import orjson
from django.conf import settings
from django.db import InterfaceError, OperationalError

from billing.journal import orphaned_segments
from gateway.kernel.context import Usage, UsageEvent

log = logging.getLogger(__name__)


def is_outage(error: BaseException) -> bool:
    """The database could not be reached or answer, as opposed to refusing
    these rows: retry them all later, never set them aside."""
    return isinstance(error, OperationalError | InterfaceError | OSError | TimeoutError)


def store_split(batch: list[UsageEvent], *, keep_connection: bool = False) -> tuple[int, list[UsageEvent]]:
    """Store `batch`; returns how many stored and the events refused. An
    outage raises (some halves may be stored: request_id makes that safe)."""
    try:
        usage_events_store(batch, keep_connection=keep_connection)
        return len(batch), []
    except Exception as error:
        if is_outage(error):
            raise
        if len(batch) == 1:
            return 0, batch
    half = len(batch) // 2
    stored_a, refused_a = store_split(batch[:half], keep_connection=keep_connection)
    stored_b, refused_b = store_split(batch[half:], keep_connection=keep_connection)
    return stored_a + stored_b, refused_a + refused_b


def quarantine(events: list[UsageEvent]) -> None:
    """Set aside events the database refuses; replayed with the spools (a
    fix to the schema or the data lets them in), and counted by the
    reconciliation until they are stored."""
    if not events:
        return
    path = spool_write(events, ".refused")  # durable before the journal segment that held them is trimmed
    log.error("%d usage events refused by the database set aside in %s", len(events), path.parent)


def spool_write(events: list[UsageEvent], suffix: str) -> Path:
    """A new file of `events` in BILLING_SPOOL_DIR, one JSON line each, on
    disk (fsync) before it returns."""
    folder = Path(settings.BILLING_SPOOL_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"usage-{os.getpid()}-{uuid.uuid4().hex}{suffix}"
    with path.open("ab") as f:
        for event in events:
            f.write(orjson.dumps(dataclasses.asdict(event)) + b"\n")
        f.flush()
        os.fsync(f.fileno())
    return path


def usage_events_store(events: Iterable[UsageEvent], *, keep_connection: bool = False) -> int:
    """Write one batch to the books (billing.ledger, imported late: the
    request path imports this module, and the ORM belongs off it)."""
    from billing.ledger import usage_events_store as store

    return store(events, keep_connection=keep_connection)


def usage_event_from_json(line: bytes) -> UsageEvent:
    data = orjson.loads(line)
    data["usage"] = Usage(**data["usage"])
    data["created_at"] = dt.datetime.fromisoformat(data["created_at"])
    return UsageEvent(**data)


SPOOLED = ("usage-*.jsonl", "usage-*.refused")  # shutdown spools, refused events


def usage_spool_replay(folder: Path | None = None) -> int:
    """Store the events a shutdown could not write and those the database
    refused before; returns how many are stored now.

    A file is claimed by renaming it, so two workers never replay the same
    one, and put back if storing fails (the database may still be down).
    Events refused again go to a new `.refused` file. Lines that cannot be
    read (a write cut short) are set aside in a `.bad` file for a person to
    look at, never silently dropped.
    """
    folder = Path(folder or settings.BILLING_SPOOL_DIR)
    if not folder.is_dir():
        return 0
    stored = 0
    for path in sorted(p for pattern in SPOOLED for p in folder.glob(pattern)):
        claimed = path.with_name(path.name + ".replaying")
        try:
            path.rename(claimed)
        except FileNotFoundError:
            continue  # another worker took it
        try:
            events = _spooled_events(claimed)
            stored += _store_in_batches(events)
        except BaseException:
            claimed.rename(path)  # stored batches are skipped next time: request_id is unique
            raise
        claimed.unlink()
    return stored


def _spooled_events(path: Path) -> list[UsageEvent]:
    events, bad = [], []
    for line in path.read_bytes().splitlines():
        if not line.strip():
            continue
        try:
            events.append(usage_event_from_json(line))
        except (ValueError, TypeError, KeyError):
            bad.append(line)
    if bad:
        bad_path = path.with_name(path.name.split(".")[0] + ".bad")
        with bad_path.open("ab") as f:
            f.write(b"\n".join(bad) + b"\n")
        log.error("usage spool %s: %d unreadable lines set aside in %s", path.name, len(bad), bad_path)
    return events


def usage_journal_replay(folder: Path | None = None) -> int:
    """Store the journaled events of processes that died; returns how many.
    A segment stays (unlocked, for the next try) if the database refuses it."""
    stored = 0
    for path, f in orphaned_segments(Path(folder or settings.BILLING_JOURNAL_DIR)):
        with f:
            events = _spooled_events(path)
            stored += _store_in_batches(events)
            path.unlink(missing_ok=True)
    return stored


def usage_left_behind_replay() -> int:
    """Journals of dead processes, then shutdown spools."""
    return usage_journal_replay() + usage_spool_replay()


def _store_in_batches(events: list[UsageEvent]) -> int:
    """Store a file's events; those refused go to a new `.refused` file. An
    outage raises: the caller keeps the file."""
    stored = 0
    for start in range(0, len(events), settings.BILLING_METER_BATCH_SIZE):
        done, refused = store_split(events[start : start + settings.BILLING_METER_BATCH_SIZE])
        quarantine(refused)
        stored += done
    return stored
