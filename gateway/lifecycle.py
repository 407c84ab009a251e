"""Background tasks of a server process, and its clean shutdown.

Each event loop that serves requests runs two tasks: the usage meter's
writer and the config watcher. They start with the first request (daphne
sends no lifespan events) in a fresh context, so they never inherit a
request's thread-sensitive context.

On shutdown the meter waits up to GATEWAY_SHUTDOWN_GRACE_SECONDS for open
requests, records the ones still open, and stores everything queued (what
the database will not take waits on disk). A thread still blocked on a
backing service then gets GATEWAY_SHUTDOWN_EXIT_SECONDS before the process
exits without it: the interpreter would otherwise wait on it for ever.
Daphne abandons in-flight streams on SIGTERM without running their
`finally` blocks, so under daphne this runs as a Twisted "before shutdown"
trigger; uvicorn and granian call it through the ASGI lifespan protocol.
"""

import asyncio
import contextvars
import logging
import os
import signal
import sys
import threading
import time
import weakref
from typing import Any

from django.conf import settings

log = logging.getLogger(__name__)

_started: "weakref.WeakSet[asyncio.AbstractEventLoop]" = weakref.WeakSet()
_tasks: set[asyncio.Task[Any]] = set()
GATEWAY_BACKGROUND = True  # tests of the bare request path turn this off
_CUT_MARGIN_SECONDS = 1.0


def ensure_background_tasks() -> None:
    """Start this loop's writer and watcher once (a set lookup afterwards)."""
    if not GATEWAY_BACKGROUND:
        return
    loop = asyncio.get_running_loop()
    if loop in _started:
        return
    _started.add(loop)
    from accounts.snapshots import config_watch
    from billing.meter import meter

    for coro in (meter.run(), config_watch()):
        task = loop.create_task(coro, context=contextvars.Context())
        _tasks.add(task)
        task.add_done_callback(_tasks.discard)
    from cachestore.store import invalidation_listener_start

    invalidation_listener_start()  # the response cache's pub/sub listener, with REDIS_URL only
    from cachestore.semantic_index import semantic_index_start

    semantic_index_start()  # the semantic cache's vectors, loaded before the first lookup needs them


def _cut_streams_on_sigterm() -> None:
    """uvicorn waits for open connections (up to --timeout-graceful-shutdown)
    before it sends lifespan.shutdown, so the grace period starts at the
    signal: from SIGTERM (or SIGINT), open streams have
    GATEWAY_SHUTDOWN_GRACE_SECONDS to finish, then end with a
    `server_shutdown` error event (proxy.stream_end). uvicorn's own handler
    still runs, after this one."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(signum)
        if getattr(previous, "gateway_cuts_streams", False):
            continue

        def handler(sig: int, frame: Any, previous: Any = previous) -> None:
            _streams_cut_after_grace()
            _realtime_sessions_close()  # before uvicorn closes their sockets without a word
            if callable(previous):
                previous(sig, frame)

        handler.gateway_cuts_streams = True  # type: ignore[attr-defined]  # marks ours: installed once
        signal.signal(signum, handler)


def _streams_cut_after_grace() -> None:
    from proxy import stream_end

    if stream_end._cut_at is None:
        stream_end.streams_cut_at(time.monotonic() + settings.GATEWAY_SHUTDOWN_GRACE_SECONDS)


def _realtime_sessions_close() -> None:
    """Realtime sessions get no grace (uvicorn closes WebSockets at the
    signal): each ends now with a `server_shutdown` event, its open
    responses recorded (proxy.realtime)."""
    from proxy.realtime import realtime_drain_soon

    realtime_drain_soon()


async def shutdown() -> None:
    _streams_cut_after_grace()  # daphne: the grace starts here; uvicorn: it started at the signal
    from proxy.realtime import realtime_drain

    await realtime_drain()  # before the meter drains, so what they record is stored with the rest
    from billing.guard import RedisSpendGuard, spend_guard
    from billing.meter import meter
    from cachestore.flight import writes_settled
    from cachestore.store import cache_store
    from proxy.capacity import capacity
    from proxy.capacity_redis import RedisCapacity
    from proxy.ratelimit import rate_limiter
    from proxy.ratelimit_redis import RedisRateLimiter
    from proxy.telemetry import telemetry_shutdown
    from proxy.upstream import upstream_sessions_close

    log.info("shutting down: %d requests in flight, %d usage events queued", meter.inflight, meter.pending)
    # The grace, then a moment for the streams cut at its end to send their
    # error event and be recorded, before whatever is left is abandoned.
    stored = await meter.drain(settings.GATEWAY_SHUTDOWN_GRACE_SECONDS + _CUT_MARGIN_SECONDS)
    guard = spend_guard()
    if isinstance(guard, RedisSpendGuard):
        await guard.wait_settled()
    await writes_settled()  # cache entries being stored
    from proxy.semantic import semantic_writes_settled

    await semantic_writes_settled()  # and the semantic cache's vectors of them
    limiter = rate_limiter()
    if isinstance(limiter, RedisRateLimiter):
        await limiter.wait_released()  # in-flight slots given back
    upstream_limits = capacity()
    if isinstance(upstream_limits, RedisCapacity):
        await upstream_limits.flush()  # the last 429s and successes, for the processes that stay
    await cache_store().stop_listener()
    for task in list(_tasks):
        task.cancel()
    await upstream_sessions_close()
    await telemetry_shutdown()  # OpenTelemetry: the spans still queued go to the collector
    if stored:
        log.info("shutdown complete: usage stored")
    else:
        log.warning("shutdown complete: usage the database did not take waits on disk for the next process")
    _exit_watchdog(settings.GATEWAY_SHUTDOWN_EXIT_SECONDS)


def _exit_watchdog(seconds: float) -> None:
    """Exit `seconds` from now if the process is still here. Everything is
    stored or on disk by now; what can still hold the process is a worker
    thread stuck on a database that never answers (Python joins executor
    threads at exit, and a hung socket has no timeout of its own)."""

    def exit_if_still_here() -> None:
        time.sleep(seconds)
        stuck = [t.name for t in threading.enumerate() if not t.daemon and t is not threading.main_thread()]
        log.error("exiting: threads still blocked %.0fs after shutdown: %s", seconds, ", ".join(stuck) or "none")
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(0)

    threading.Thread(target=exit_if_still_here, name="exit-watchdog", daemon=True).start()


def install_daphne_triggers() -> None:
    """Daphne sends no lifespan events: start the background tasks when its
    reactor runs (so usage a dead process left behind is replayed before any
    request), and shut down before it stops."""
    # Only under daphne: importing the reactor elsewhere would install one.
    if "twisted.internet.reactor" not in sys.modules:
        return
    from twisted.internet import defer, reactor

    # call_soon: ensure_background_tasks needs the running asyncio loop
    reactor.callWhenRunning(lambda: asyncio.get_event_loop().call_soon(ensure_background_tasks))

    def before_shutdown() -> defer.Deferred:
        _stop_accepting(reactor)
        return defer.Deferred.fromFuture(asyncio.ensure_future(shutdown()))

    # zope.interface methods are declared without self: without the mypy-zope
    # plugin, mypy binds "before" to self and reads the arguments one place off.
    reactor.addSystemEventTrigger("before", "shutdown", before_shutdown)  # type: ignore[arg-type]


def _stop_accepting(reactor: Any) -> None:
    """Close daphne's listening sockets at once: Twisted would only close them
    after the before-shutdown triggers, so new connections would keep being
    accepted (and cut) during the grace period. Open connections go on."""
    from twisted.internet import tcp, unix

    for reader in list(reactor.getReaders()):
        if isinstance(reader, (tcp.Port, unix.Port)):
            reader.stopListening()


class LifespanApp:
    """ASGI lifespan for uvicorn and granian (daphne never sends it)."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _cut_streams_on_sigterm()
                ensure_background_tasks()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return
