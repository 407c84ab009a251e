"""The usage meter: requests push events, a background writer stores batches.

`push()` is a synchronous, non-blocking append, safe to call from a
`finally` block that a second cancellation cannot interrupt. A writer task
on the server's event loop drains the queue every BILLING_METER_FLUSH_SECONDS
(or as soon as BILLING_METER_BATCH_SIZE events wait), one insert per batch,
on a thread of its own off the request path.

Nothing is dropped: each event is in the process's journal (billing.journal)
before the queue holds it, so a SIGKILL loses none; a failed write puts the
batch back and is retried; at shutdown, whatever the database will not take
is appended to a JSON Lines spool. Both are replayed when a process starts
and every minute. `request_id` is unique and writes ignore conflicts, so a
replayed or retried batch never counts twice.
"""

import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import orjson
from django.conf import settings

from billing.journal import UsageJournal, orphaned_segments
from gateway.kernel.context import Usage, UsageEvent

log = logging.getLogger(__name__)


class InFlight(Protocol):
    """A request whose usage is not known yet (an open stream)."""

    def abandon(self) -> None:
        """Record the usage observed so far; the request will not finish."""


class UsageMeter:
    def __init__(self) -> None:
        self._queue: deque[UsageEvent] = deque()
        self._inflight: set[InFlight] = set()
        self._wakeup: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._write_lock = threading.Lock()
        self._listeners: list[Callable[[UsageEvent], None]] = []
        self._writer: ThreadPoolExecutor | None = None
        self._writing = 0  # events taken from the queue whose batch is not stored yet
        self.journal = UsageJournal()

    # --- request side -------------------------------------------------------
    def push(self, event: UsageEvent) -> None:
        """Queue one event; safe from any thread (a response's close hook runs
        in a worker thread)."""
        with self.journal.lock:
            try:
                self.journal.append(event)
            except OSError:  # a full or read-only disk must not cost the answer: the queue still has it
                log.warning("usage journal not written; event %s held in memory only", event.request_id, exc_info=True)
            self._queue.append(event)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # an observer's bug must never cost a usage record
                log.exception("usage event listener %r failed", listener)
        if self._wakeup is not None and len(self._queue) >= settings.BILLING_METER_BATCH_SIZE:
            assert self._loop is not None
            with contextlib.suppress(RuntimeError):  # the loop has closed: the drain flushes
                self._loop.call_soon_threadsafe(self._wakeup.set)

    def listen(self, listener: Callable[[UsageEvent], None]) -> None:
        """Call `listener` with every event as it is pushed (metrics, the live
        feed). It runs on the pushing thread, which may be a worker thread:
        it must be quick and must not block."""
        if listener not in self._listeners:
            self._listeners.append(listener)

    def track(self, request: InFlight) -> None:
        self._inflight.add(request)

    def untrack(self, request: InFlight) -> None:
        self._inflight.discard(request)

    @property
    def pending(self) -> int:
        """Events not stored yet: queued, or in the batch being written."""
        return len(self._queue) + self._writing

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    # --- writer side ----------------------------------------------------------
    async def run(self) -> None:
        """Flush forever; started once per event loop by gateway.lifecycle."""
        self._wakeup = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        await self._replay_left_behind()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), settings.BILLING_METER_FLUSH_SECONDS)
            self._wakeup.clear()
            try:
                await self.flush()
            except Exception:
                log.warning("usage flush failed; %d events kept for the next try", self.pending, exc_info=True)
                await asyncio.sleep(settings.BILLING_METER_FLUSH_SECONDS)

    async def _replay_left_behind(self) -> None:
        """What dead processes journaled and shutdowns spooled, before this
        process's first flush."""
        try:
            stored = await self._on_writer(usage_left_behind_replay)
        except Exception:
            log.warning("usage replay at start failed; the periodic task retries", exc_info=True)
        else:
            if stored:
                log.warning("replayed %d usage events left behind by earlier processes", stored)

    async def _on_writer(self, work: Callable[[], int]) -> int:
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="usage-writer")
        return await asyncio.get_running_loop().run_in_executor(self._writer, work)

    async def flush(self) -> int:
        """On the meter's one writer thread, which keeps its connection
        between batches (see billing.ledger.usage_events_store)."""
        return await self._on_writer(functools.partial(self.flush_sync, keep_connection=True))

    def writer_stop(self) -> None:
        """Close the writer thread's connection and end the thread (shutdown, tests)."""
        if self._writer is None:
            return
        from django.db import connections

        self._writer.submit(connections.close_all).result()
        self._writer.shutdown()
        self._writer = None

    def flush_sync(self, *, keep_connection: bool = False) -> int:
        """Write everything queued; on failure the events stay queued.

        A batch that fails is retried one event at a time: if some events
        store and others do not, the database is up and those others can
        never be stored (a poison event), so they are set aside in the
        spool's `.bad` file instead of blocking every later event.
        """
        written = 0
        with self._write_lock:  # one writer at a time keeps batches in order
            # What is queued now, not what arrives meanwhile: chasing the queue
            # kept the writer storing two or three events at a time, one
            # transaction each, for as long as traffic lasted. The journal's
            # segments sealed now hold these events (and no later one).
            with self.journal.lock:
                sealed = self.journal.seal()
                due = len(self._queue)
            while due > 0 and self._queue:
                batch = self.take(min(due, settings.BILLING_METER_BATCH_SIZE))
                due -= len(batch)
                self._writing = len(batch)
                try:
                    usage_events_store(batch, keep_connection=keep_connection)
                except Exception:
                    stored, poison = _store_one_by_one(batch)
                    if not stored:  # nothing stores: the database is down, keep everything
                        self._queue.extendleft(reversed(batch))
                        raise
                    quarantine(poison)
                    written += stored
                    continue
                finally:
                    self._writing = 0
                written += len(batch)
            self.journal.trim(sealed)  # every event they hold is stored (or set aside as refused)
        return written

    def take(self, limit: int) -> list[UsageEvent]:
        """Remove and return up to `limit` queued events, oldest first."""
        batch: list[UsageEvent] = []
        while self._queue and len(batch) < limit:
            batch.append(self._queue.popleft())
        return batch

    async def drain(self, grace_seconds: float) -> None:
        """Shutdown: let open streams finish, record the rest, store it all."""
        deadline = time.monotonic() + grace_seconds
        while self._inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for request in list(self._inflight):
            request.abandon()
        try:
            await self.flush()
        except Exception:
            log.exception("usage flush failed at shutdown; spooling %d events to disk", self.pending)
            self.spool()
        self.writer_stop()

    def spool(self) -> Path | None:
        """Append every queued event to a JSON Lines file for a later replay."""
        batch = self.take(len(self._queue))
        if not batch:
            return None
        folder = Path(settings.BILLING_SPOOL_DIR)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"usage-{os.getpid()}-{uuid.uuid4().hex}.jsonl"
        with path.open("ab") as f:
            for event in batch:
                f.write(orjson.dumps(dataclasses.asdict(event)) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        with self.journal.lock:
            self.journal.trim(self.journal.seal())  # the spool holds them now
        return path


def _store_one_by_one(batch: list[UsageEvent]) -> tuple[int, list[UsageEvent]]:
    stored, poison = 0, []
    for event in batch:
        try:
            usage_events_store([event])
            stored += 1
        except Exception:
            poison.append(event)
    return stored, poison


def quarantine(events: list[UsageEvent]) -> None:
    """Set aside events the database refuses, for a person to look at."""
    if not events:
        return
    folder = Path(settings.BILLING_SPOOL_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"usage-{os.getpid()}-refused.bad").open("ab") as f:
        for event in events:
            f.write(orjson.dumps(dataclasses.asdict(event)) + b"\n")
    log.error("%d usage events refused by the database set aside in %s", len(events), folder)


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


meter = UsageMeter()


def usage_spool_replay(folder: Path | None = None) -> int:
    """Store the events a shutdown could not write; returns how many.

    A file is claimed by renaming it, so two workers never replay the same
    one, and put back if storing fails (the database may still be down).
    Lines that cannot be read (a write cut short) are set aside in a `.bad`
    file for a person to look at, never silently dropped.
    """
    folder = Path(folder or settings.BILLING_SPOOL_DIR)
    if not folder.is_dir():
        return 0
    stored = 0
    for path in sorted(folder.glob("usage-*.jsonl")):
        claimed = path.with_suffix(".replaying")
        try:
            path.rename(claimed)
        except FileNotFoundError:
            continue  # another worker took it
        try:
            events = _spooled_events(claimed)
            _store_in_batches(events)
        except BaseException:
            claimed.rename(path)  # stored batches are skipped next time: request_id is unique
            raise
        claimed.unlink()
        stored += len(events)
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
        with path.with_suffix(".bad").open("ab") as f:
            f.write(b"\n".join(bad) + b"\n")
        log.error("usage spool %s: %d unreadable lines set aside in %s", path.name, len(bad), path.with_suffix(".bad"))
    return events


def usage_journal_replay(folder: Path | None = None) -> int:
    """Store the journaled events of processes that died; returns how many.
    A segment stays (unlocked, for the next try) if the database refuses it."""
    stored = 0
    for path, f in orphaned_segments(Path(folder or settings.BILLING_JOURNAL_DIR)):
        with f:
            events = _spooled_events(path)
            _store_in_batches(events)
            path.unlink(missing_ok=True)
        stored += len(events)
    return stored


def usage_left_behind_replay() -> int:
    """Journals of dead processes, then shutdown spools."""
    return usage_journal_replay() + usage_spool_replay()


def _store_in_batches(events: list[UsageEvent]) -> None:
    for start in range(0, len(events), settings.BILLING_METER_BATCH_SIZE):
        batch = events[start : start + settings.BILLING_METER_BATCH_SIZE]
        try:
            usage_events_store(batch)
        except Exception:
            stored, poison = _store_one_by_one(batch)
            if not stored:  # the database is down: keep the file
                raise
            quarantine(poison)
