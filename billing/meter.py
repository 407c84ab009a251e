"""The usage meter: requests push events, a background writer stores batches.

`push()` is a synchronous, non-blocking append, safe to call from a
`finally` block that a second cancellation cannot interrupt. A writer task
on the server's event loop drains the queue every BILLING_METER_FLUSH_SECONDS
(or as soon as BILLING_METER_BATCH_SIZE events wait), one insert per batch,
on a thread of its own off the request path.

Nothing is dropped: each event is in the process's journal (billing.journal)
before the queue holds it, so a SIGKILL loses none; a write that fails
because the database is unreachable puts the batch back, whole, for the next
try; a batch the database refuses is split in halves until the events it
refuses are found, and only those are set aside (a `.refused` file). At
shutdown, whatever the database will not take within the grace is appended
to a JSON Lines spool, and a write still hanging is left to the journal.
Journals, spools and refused files are all replayed when a process starts
and every minute. `request_id` is unique and writes ignore conflicts, so a
replayed or retried batch never counts twice.
"""

import asyncio
import contextlib
import functools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Protocol

from django.conf import settings

from billing.journal import UsageJournal
from billing.spool import quarantine, spool_write, store_split, usage_left_behind_replay
from gateway.kernel.context import UsageEvent

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
        self._writer: DaemonWorker | None = None
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
        try:  # then the books are complete enough to bring Redis's spend counters up to them
            await self._on_writer(_spend_counters_resync)
        except Exception:
            log.warning("spend counters not resynchronised at start; the minute task retries", exc_info=True)

    async def _on_writer(self, work: Callable[[], int]) -> int:
        if self._writer is None:
            self._writer = DaemonWorker("usage-writer")
        return await asyncio.wrap_future(self._writer.submit(work))

    async def flush(self) -> int:
        """On the meter's one writer thread, which keeps its connection
        between batches (see billing.ledger.usage_events_store)."""
        return await self._on_writer(functools.partial(self.flush_sync, keep_connection=True))

    def writer_stop(self, *, hung: bool = False) -> None:
        """Close the writer thread's connection and end the thread (shutdown,
        tests). A `hung` writer (a write the database never answers) is left
        behind: it is a daemon thread, so it cannot hold the process up."""
        if self._writer is None:
            return
        if not hung:
            from django.db import connections

            self._writer.submit(connections.close_all).result()
        self._writer.stop()
        self._writer = None

    def flush_sync(self, *, keep_connection: bool = False) -> int:
        """Write everything queued; on failure the events stay queued.

        A batch the database refuses (as opposed to one it cannot be reached
        for) is split in halves, and halves again, until the events it
        refuses are found: those are set aside in a `.refused` file, replayed
        like the rest, so one poison event never blocks every later one and
        a batch of good events is never set aside with it.
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
                    stored, refused = store_split(batch, keep_connection=keep_connection)
                except Exception:  # the database is unreachable: keep it all for the next try
                    self._queue.extendleft(reversed(batch))
                    raise
                finally:
                    self._writing = 0
                quarantine(refused)
                written += stored
            self.journal.trim(sealed)  # every event they hold is stored (or set aside as refused)
        return written

    def take(self, limit: int) -> list[UsageEvent]:
        """Remove and return up to `limit` queued events, oldest first."""
        batch: list[UsageEvent] = []
        while self._queue and len(batch) < limit:
            batch.append(self._queue.popleft())
        return batch

    async def drain(self, grace_seconds: float) -> bool:
        """Shutdown: let open streams finish, record the rest, store it all,
        within `grace_seconds` whatever the database does. True when the
        books have every event; False when some wait in the spool or the
        journal for the next process."""
        deadline = time.monotonic() + grace_seconds
        while self._inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for request in list(self._inflight):
            request.abandon()
        # At least a moment to write, even when the streams took the grace.
        left = max(deadline - time.monotonic(), settings.BILLING_SHUTDOWN_FLUSH_MIN_SECONDS)
        try:
            await asyncio.wait_for(self.flush(), left)
        except TimeoutError:
            # The batch being written stays in the journal: its segment is
            # trimmed only once stored, and replayed after this process.
            log.error("usage flush still hanging at the end of the grace; spooling %d events", len(self._queue))
            self.spool(journal_trim=False)
            self.writer_stop(hung=True)
            return False
        except Exception:
            log.exception("usage flush failed at shutdown; spooling %d events to disk", self.pending)
            self.spool()
            self.writer_stop()
            return False
        self.writer_stop()
        return True

    def spool(self, *, journal_trim: bool = True) -> Path | None:
        """Append every queued event to a JSON Lines file for a later replay.
        Without `journal_trim` the journal keeps them too (a hung write may
        hold a sealed segment's events: replaying both counts each once)."""
        batch = self.take(len(self._queue))
        if not batch:
            return None
        path = spool_write(batch, ".jsonl")
        if journal_trim:
            with self.journal.lock:
                self.journal.trim(self.journal.seal())  # the spool holds them now
        return path


class DaemonWorker:
    """One daemon thread running submitted calls in order. A standard
    executor's threads are joined when the interpreter exits, so a write the
    database never answers would hold a stopping process for ever."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = queue.SimpleQueue()
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def submit(self, work: Callable[[], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        self._jobs.put((future, work))
        return future

    def stop(self) -> None:
        self._jobs.put(None)  # after what is queued

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, work = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(work())
            except BaseException as error:
                future.set_exception(error)


def _spend_counters_resync() -> int:
    from billing.counters import spend_counters_resync  # the ORM, off the request path's imports

    return spend_counters_resync()


meter = UsageMeter()
