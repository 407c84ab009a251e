"""Opt-in request tracing: a sampled request's bodies, kept for debugging.

A key's (else its tenant's) `trace_sample_rate` decides, once per request,
whether the request is traced. Off (0, the default) the request path pays
one attribute check in `proxy.pipeline.handle` and nothing else: no capture object.

A traced request carries a `TraceCapture` on its usage recorder. It keeps
references only: the parsed request body, the JSON answer's bytes, or a
stream's events as they pass to the client (up to TRACE_MAX_BODY_BYTES, then
marked truncated). When the attempt the client sees finishes, the capture
goes to a background writer thread; serializing, redacting and writing all
happen there. Authorization and x-api-key headers are never captured (no
headers are); key-like strings in bodies and fields named like secrets are
redacted with gateway.kernel.logs' helpers.

Sinks (TRACE_SINK): `file` appends JSON Lines to TRACE_DIR, one file per UTC
day (`traces-YYYY-MM-DD.jsonl`); `db` stores `accounts.RequestTrace` rows.
`trace_retention` (a beat task) deletes both past TRACE_RETENTION_DAYS.

Traces are a debugging aid, not books: when the writer falls behind by
TRACE_QUEUE_MAX traces or a write fails, traces are dropped (and logged),
never the request slowed down. Cache hits are not traced (no upstream call).
"""

import atexit
import datetime as dt
import logging
import queue
import random
import re
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
from django.conf import settings

from gateway.kernel.context import TenantContext, UsageEvent
from gateway.kernel.logs import REDACTED, is_secret_field, redact

log = logging.getLogger(__name__)

# gateway.kernel.logs leaves short `sk-...` strings readable (display prefixes in
# log lines); in a captured body anything key-like goes.
_KEY_LIKE = re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_\-]{8,}")
_BATCH = 100
_STOP = object()


class TraceCapture:
    """What one traced request sent and got back; filled on the request
    path (appends of references only), rendered by the writer."""

    __slots__ = (
        "ctx",
        "request_id",
        "endpoint",
        "request_body",
        "started_at",
        "started",
        "max_bytes",
        "body",
        "events",
        "size",
        "truncated",
        "attempts",
        "event",
        "latency_ms",
        "finished_at",
        "augmentation",
    )

    def __init__(self, ctx: TenantContext, request_id: str, endpoint: str, request_body: dict[str, Any]) -> None:
        self.ctx = ctx
        self.request_id = request_id
        self.endpoint = endpoint
        self.request_body = request_body  # never changed after parsing (exchanges copy it)
        self.started_at = dt.datetime.now(dt.UTC)
        self.started = time.perf_counter()
        self.max_bytes: int = settings.TRACE_MAX_BODY_BYTES
        self.body: bytes | None = None  # a JSON (or error) answer
        self.events: list[bytes] = []  # a stream's events, as the client got them
        self.size = 0
        self.truncated = False
        self.attempts: list[dict[str, Any]] = []  # earlier attempts that were retried
        self.event: UsageEvent | None = None
        self.latency_ms = 0
        self.finished_at = self.started_at
        # An augmentor's steps (proxy.augment): the designator's decision,
        # each search and scrape and what reached the prompt; None: none.
        self.augmentation: list[dict[str, Any]] | None = None

    def add_events(self, events: Iterable[bytes]) -> None:
        """A stream's events as they pass; past the cap, only the mark."""
        if self.truncated:
            return
        for event in events:
            self.size += len(event)
            if self.size > self.max_bytes:
                self.truncated = True
                return
            self.events.append(event)

    def set_body(self, body: bytes) -> None:
        if len(body) > self.max_bytes:
            body, self.truncated = body[: self.max_bytes], True
        self.body = body

    def attempt_finished(self, event: UsageEvent, body: bytes | None = None) -> None:
        """From the usage recorder, once per upstream attempt. A retried
        attempt (`<request id>~<n>`) is noted; the one the client saw ends
        the trace and hands it to the writer."""
        if event.request_id != self.request_id:
            self.attempts.append(
                {
                    "request_id": event.request_id,
                    "provider": event.provider,
                    "status": event.status_code,
                    "error_code": event.error_code,
                }
            )
            return
        if body is not None and self.body is None:
            self.set_body(body)
        self.event = event
        self.latency_ms = int((time.perf_counter() - self.started) * 1000)
        self.finished_at = dt.datetime.now(dt.UTC)
        trace_writer.submit(self)


def trace_start(ctx: TenantContext, request_id: str, endpoint: str, body: dict[str, Any]) -> TraceCapture | None:
    """A capture when this request is sampled. Callers check
    `ctx.trace_sample_rate` first, so an untraced key never gets here."""
    if random.random() < ctx.trace_sample_rate:
        return TraceCapture(ctx, request_id, endpoint, body)
    return None


# --- rendering (writer thread) ------------------------------------------------
def scrub(value: Any) -> Any:
    """`value` with key-like strings and secret-named fields redacted."""
    if isinstance(value, str):
        return _KEY_LIKE.sub(REDACTED, redact(value))
    if isinstance(value, dict):
        return {k: REDACTED if is_secret_field(str(k)) else scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


def _text(raw: bytes) -> str:
    return scrub(raw.decode("utf-8", "replace"))  # a str in, a str out


def _json_or_text(raw: bytes, *, truncated: bool) -> Any:
    """Parsed JSON when the bytes are whole JSON, else the text."""
    if not truncated:
        try:
            return scrub(orjson.loads(raw))
        except orjson.JSONDecodeError:
            pass
    return _text(raw)


def trace_record(capture: TraceCapture) -> dict[str, Any]:
    """The trace as stored: one JSON Lines line, or one RequestTrace row."""
    event = capture.event
    assert event is not None
    ctx = capture.ctx
    request_raw = orjson.dumps(capture.request_body)
    truncated = capture.truncated
    if len(request_raw) > capture.max_bytes:
        request: Any = _text(request_raw[: capture.max_bytes])
        truncated = True
    else:
        request = scrub(capture.request_body)
    if event.stream and capture.body is None:
        response: Any = [_text(e) for e in capture.events]
    elif capture.body is not None:
        response = _json_or_text(capture.body, truncated=capture.truncated)
    else:
        response = None  # a transport failure: status and error_code say what happened
    return {
        "request_id": capture.request_id,
        "tenant_id": ctx.tenant_id,
        "tenant": ctx.tenant_slug,
        "key_id": ctx.key_id,
        "key_prefix": ctx.key_prefix,
        "model": event.public_model,
        "provider": event.provider,
        "upstream_model": event.upstream_model,
        "endpoint": capture.endpoint,
        "status": event.status_code,
        "error_code": event.error_code,
        "stream": event.stream,
        "started_at": capture.started_at.isoformat(),
        "finished_at": capture.finished_at.isoformat(),
        "latency_ms": capture.latency_ms,
        "request": request,
        "response": response,
        "truncated": truncated,
        "attempts": capture.attempts,
        **({} if capture.augmentation is None else {"augmentation": scrub(capture.augmentation)}),
    }


# --- sinks ----------------------------------------------------------------------
def trace_file_for(day: dt.date, folder: Path | None = None) -> Path:
    return Path(folder or settings.TRACE_DIR) / f"traces-{day.isoformat()}.jsonl"


def traces_write_files(records: list[dict[str, Any]], folder: Path | None = None) -> None:
    """Append each record to its UTC day's file: one write per file and
    batch, so lines from several processes never interleave mid-line."""
    by_file: dict[Path, list[bytes]] = {}
    for record in records:
        day = dt.datetime.fromisoformat(record["started_at"]).date()
        by_file.setdefault(trace_file_for(day, folder), []).append(orjson.dumps(record) + b"\n")
    for path, lines in by_file.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as f:
            f.write(b"".join(lines))


def trace_find_in_files(request_id: str, days: Iterable[dt.date], folder: Path | None = None) -> dict[str, Any] | None:
    """One request's trace from the day files it may be in (the admin's
    request explorer; never the request path). Lines are matched as bytes
    before any is parsed, so a day of traces costs one read, not one parse per line."""
    needle = orjson.dumps({"request_id": request_id})[1:-1]  # '"request_id":"req_..."', as written
    for day in days:
        path = trace_file_for(day, folder)
        if not path.is_file():
            continue
        with path.open("rb") as lines:
            for line in lines:
                if needle in line:
                    record: dict[str, Any] = orjson.loads(line)
                    if record.get("request_id") == request_id:
                        return record
    return None


def traces_write(records: list[dict[str, Any]]) -> None:
    if settings.TRACE_SINK == "db":
        from accounts.traces import request_traces_store  # the ORM stays off the request path's imports

        request_traces_store(records)
    else:
        traces_write_files(records)


def trace_files_prune(days: int, folder: Path | None = None, *, today: dt.date | None = None) -> int:
    """Delete day files older than `days` days; returns how many."""
    folder = Path(folder or settings.TRACE_DIR)
    if not folder.is_dir():
        return 0
    cutoff = (today or dt.datetime.now(dt.UTC).date()) - dt.timedelta(days=days)
    deleted = 0
    for path in folder.glob("traces-*.jsonl"):
        try:
            day = dt.date.fromisoformat(path.stem.removeprefix("traces-"))
        except ValueError:
            continue  # not ours
        if day < cutoff:
            path.unlink(missing_ok=True)
            deleted += 1
    return deleted


def trace_retention(days: int) -> int:
    """Delete traces older than `days` days, in files and rows; returns how many."""
    from accounts.traces import request_traces_prune

    return trace_files_prune(days) + request_traces_prune(days)


# --- the writer -------------------------------------------------------------------
class TraceWriter:
    """A daemon thread draining a queue of finished captures. It starts with
    the first trace, so a process that traces nothing never runs it; being a
    thread, it is fed from the event loop and from worker threads alike."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.dropped = 0

    def submit(self, capture: TraceCapture) -> None:
        """Non-blocking; drops the trace when the writer is too far behind."""
        if self._queue.qsize() >= settings.TRACE_QUEUE_MAX:
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.warning("trace writer behind: %d traces dropped", self.dropped)
            return
        self._queue.put(capture)
        if self._thread is None:
            self._start()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="trace-writer", daemon=True)
                self._thread.start()
                atexit.register(self.close)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < _BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(item is _STOP for item in batch)
            self.write([item for item in batch if item is not _STOP])
            if stop:
                return

    def write(self, captures: list[TraceCapture]) -> None:
        if not captures:
            return
        try:
            traces_write([trace_record(c) for c in captures])
        except Exception:
            log.exception("%d traces could not be written and were dropped", len(captures))

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (process exit)."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._queue.put(_STOP)
            thread.join(timeout)


trace_writer = TraceWriter()
