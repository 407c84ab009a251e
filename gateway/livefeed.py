"""The dashboard's live feed: usage events, as they happen, to staff browsers.

The usage meter calls `publisher` with every event, on whatever thread
pushed it (a response's close hook runs in a worker thread), so the
listener only appends to a bounded buffer and, at most once per flush,
asks the event loop (`call_soon_threadsafe`) to send what is buffered.
One `group_send` per LIVEFEED_FLUSH_SECONDS, whatever the traffic: with
the Redis channel layer that is a few round trips a second, not one per
request. When browsers cannot keep up, the oldest events are dropped: the
feed is a view, the ledger is the meter's.

Browsers connect to /ws/live/ (see gateway.asgi); only active staff users
who may view usage records are accepted. /ws/live/?tenant=<slug> (the
dashboard's own ?tenant=) carries one tenant's events only; an unknown slug is refused rather than widened to
every tenant. Events carry ids; the consumer adds the tenant slug and key
prefix from a small per-process cache (a key's tenant and prefix never change).
"""

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from django.urls import path

from billing.pricing import usd_string
from gateway.kernel.context import UsageEvent

log = logging.getLogger(__name__)

GROUP = "live_feed"
FLUSH_SECONDS = 0.25
STALE_FLUSH_SECONDS = 5.0
MAX_BUFFERED = 500  # events waiting for the next flush; older ones are dropped
MAX_NAMES = 10_000  # cached key id -> (tenant slug, key prefix)
CLOSE_FORBIDDEN = 4403
CLOSE_UNKNOWN_TENANT = 4404


def event_payload(event: UsageEvent) -> dict[str, Any]:
    """What a browser sees of one event: small, and money as an exact USD string."""
    usage = event.usage
    return {
        "time": event.created_at.isoformat(),
        "request_id": event.request_id,
        "tenant_id": event.tenant_id,
        "key_id": event.key_id,
        "model": event.public_model,
        "provider": event.provider,
        "status": event.status_code,
        "input_tokens": usage.prompt_tokens,
        "output_tokens": usage.output_tokens + usage.reasoning_tokens + usage.audio_output_tokens,
        "cost_usd": usd_string(event.cost_nanos),
        "latency_ms": event.latency_ms,
        "ttft_ms": event.ttft_ms,
        "cache_hit": event.cache_hit,
        "stream": event.stream,
    }


class LiveFeedPublisher:
    """The meter listener. Never blocks and never raises into the meter."""

    def __init__(self) -> None:
        self._buffer: deque[UsageEvent] = deque(maxlen=MAX_BUFFERED)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_asked_at: float | None = None  # monotonic time of the pending flush request
        self._sending: set[asyncio.Task[None]] = set()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The server's event loop, where sends run."""
        self._loop = loop

    def __call__(self, event: UsageEvent) -> None:
        try:
            self._buffer.append(event)  # deque appends are thread-safe
            loop = self._current_loop()
            if loop is None or self._flush_asked():
                return
            self._flush_asked_at = time.monotonic()  # a race costs at most one extra, empty flush
            loop.call_soon_threadsafe(self._flush_later, loop)
        except Exception:  # a closed loop at shutdown, most likely
            self._flush_asked_at = None
            log.debug("live feed: event not forwarded", exc_info=True)

    def _flush_asked(self) -> bool:
        """A flush is on its way; one asked long ago was lost with its loop."""
        asked = self._flush_asked_at
        return asked is not None and time.monotonic() - asked < STALE_FLUSH_SECONDS

    def _current_loop(self) -> asyncio.AbstractEventLoop | None:
        """The bound server loop; else the loop running on this thread, if any."""
        if self._loop is None or self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop = asyncio.get_running_loop()
        if self._loop is None or self._loop.is_closed():
            return None
        return self._loop

    def _flush_later(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.call_later(FLUSH_SECONDS, self._flush)

    def _flush(self) -> None:
        self._flush_asked_at = None
        events = [event_payload(self._buffer.popleft()) for _ in range(len(self._buffer))]
        if not events:
            return
        task = asyncio.ensure_future(self._send(events))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, events: list[dict[str, Any]]) -> None:
        try:
            layer = get_channel_layer()
            if layer is not None:
                await layer.group_send(GROUP, {"type": "live.events", "events": events})
        except Exception:
            log.warning("live feed: %d events not sent", len(events), exc_info=True)


publisher = LiveFeedPublisher()


def live_feed_install() -> None:
    """Register the publisher with the usage meter (once; called by gateway.asgi)."""
    from billing.meter import meter

    meter.listen(publisher)


# --- The browser side -------------------------------------------------------------

_names: dict[int, tuple[str, str]] = {}


def _key_names_load(key_ids: Iterable[int]) -> None:
    from accounts.models import ApiKey

    if len(_names) > MAX_NAMES:
        _names.clear()
    rows = ApiKey.objects.filter(pk__in=list(key_ids)).values_list("pk", "tenant__slug", "prefix")
    _names.update({pk: (slug, prefix) for pk, slug, prefix in rows})


def _tenant_id_for(slug: str) -> int | None:
    from accounts.models import Tenant

    return Tenant.objects.filter(slug=slug).values_list("pk", flat=True).first()


def requested_tenant_slug(query_string: bytes) -> str:
    """?tenant=<slug>, as the dashboard takes it; "" for every tenant."""
    values = parse_qs(query_string.decode("latin-1")).get("tenant", [])
    return values[-1] if values else ""


class LiveFeedConsumer(AsyncJsonWebsocketConsumer):
    """One staff browser's feed: batches of events as JSON lists."""

    joined = False
    tenant_id: int | None = None  # None: every tenant

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not (user.is_active and user.is_staff):
            await self.close(code=CLOSE_FORBIDDEN)  # before accept: the handshake is refused
            return
        # Each event is a usage record in the making: shown to staff who may read those.
        if not await database_sync_to_async(user.has_perm)("billing.view_usagerecord"):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        slug = requested_tenant_slug(self.scope.get("query_string", b""))
        if slug:
            self.tenant_id = await database_sync_to_async(_tenant_id_for)(slug)
            if self.tenant_id is None:
                await self.close(code=CLOSE_UNKNOWN_TENANT)
                return
        publisher.bind(asyncio.get_running_loop())
        await self.channel_layer.group_add(GROUP, self.channel_name)
        self.joined = True
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if self.joined:
            await self.channel_layer.group_discard(GROUP, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        pass  # the feed only talks

    async def live_events(self, message: dict[str, Any]) -> None:
        events = message["events"]
        if self.tenant_id is not None:
            events = [event for event in events if event["tenant_id"] == self.tenant_id]
            if not events:
                return
        unknown = {event["key_id"] for event in events} - _names.keys()
        if unknown:
            await database_sync_to_async(_key_names_load)(unknown)
        for event in events:
            event["tenant"], event["key_prefix"] = _names.get(event["key_id"], ("?", "?"))
        await self.send_json(events)


websocket_urlpatterns = [path("ws/live/", LiveFeedConsumer.as_asgi())]
