"""The usage journal: every event is on disk before the meter holds it.

The meter keeps events in memory until its next flush; a process killed
with SIGKILL (or by the OOM killer) would lose them. So `push()` first
appends the event as one JSON line to this process's journal segment with
a single `write()` on an O_APPEND descriptor: the line is in the page
cache when the call returns, which survives the process (not the machine;
no fsync per request, which would cost a disk round trip each).

Segments are trimmed once the database has their events: the meter seals
the open segment when it takes a flush's events (under the same lock as
`append`, so a sealed segment holds exactly events of that flush or
earlier) and unlinks it once the flush has stored them all.

Each segment is held with an exclusive `flock` while its process lives;
the kernel releases it when the process dies, however it dies. At start
(and from the periodic replay task) any segment whose lock can be taken
belongs to a dead process: its events are stored and the segment removed.
`request_id` is unique in the books, so an event stored just before the
kill and replayed after it counts once.
"""

import fcntl
import logging
import os
import threading
import uuid
from pathlib import Path
from typing import IO

import orjson

from gateway.kernel.context import UsageEvent

log = logging.getLogger(__name__)

_PREFIX = "journal-"


class UsageJournal:
    """This process's segments in `folder`: one open for appends, the sealed
    ones waiting for their flush to be stored."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or Path(".")  # None: BILLING_JOURNAL_DIR, read on first use
        self._configured = folder is not None
        self.lock = threading.Lock()  # append and seal; the meter takes it around its queue too
        self._pid = 0
        self._open: tuple[Path, int] | None = None
        self._open_lines = 0
        self._sealed: list[tuple[Path, int]] = []

    def append(self, event: UsageEvent) -> None:
        """One line, one write (the caller holds `lock`)."""
        if self._pid != os.getpid():  # first use, or a forked child: never share the parent's segment
            self._start()
        if self._open is None:
            self._open = self._segment_create()
        os.write(self._open[1], orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE))
        self._open_lines += 1

    def seal(self) -> int:
        """Close the open segment for appends (the caller holds `lock`);
        returns how many segments wait to be trimmed."""
        if self._open is not None and self._open_lines:
            self._sealed.append(self._open)
            self._open, self._open_lines = None, 0
        return len(self._sealed)

    def trim(self, upto: int) -> None:
        """Remove the first `upto` sealed segments: their events are stored."""
        done, self._sealed = self._sealed[:upto], self._sealed[upto:]
        for path, fd in done:
            path.unlink(missing_ok=True)
            os.close(fd)  # closing drops the lock

    def _start(self) -> None:
        if not self._configured:
            from django.conf import settings

            self.folder, self._configured = Path(settings.BILLING_JOURNAL_DIR), True
        self._pid = os.getpid()
        self._open, self._open_lines, self._sealed = None, 0, []
        self.folder.mkdir(parents=True, exist_ok=True)

    def _segment_create(self) -> tuple[Path, int]:
        path = self.folder / f"{_PREFIX}{self._pid}-{uuid.uuid4().hex}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return path, fd


def orphaned_segments(folder: Path) -> list[tuple[Path, IO[bytes]]]:
    """Segments whose process has died, each opened and locked by the caller
    (so two replaying processes never take the same one)."""
    found: list[tuple[Path, IO[bytes]]] = []
    for path in sorted(folder.glob(f"{_PREFIX}*.jsonl")) if folder.is_dir() else ():
        try:
            f = path.open("rb")
        except FileNotFoundError:
            continue  # trimmed or replayed meanwhile
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()  # its process is alive
            continue
        if not path.exists():  # replayed and removed between the glob and the lock
            f.close()
            continue
        found.append((path, f))
    return found
