"""`/v1/realtime`: OpenAI's Realtime API over WebSocket, relayed to the provider.

`GET /v1/realtime?model=NAME` upgrades to a WebSocket served by
`RealtimeConsumer` (channels; gateway.asgi routes it, with no session or
Origin middleware). The key comes as `Authorization: Bearer` (the `openai`
SDK's `client.realtime.connect(model=...)`), `x-api-key`, or the
`openai-insecure-api-key.<key>` subprotocol browsers send; the accepted
subprotocol is then `realtime`, as OpenAI answers.

At connect the session walks the request path's first steps
(proxy.realtime_connect): authenticate (accounts.auth), route
(proxy.routing.plan_for), limits (the key's and tenant's rate limits, and
PROXY_REALTIME_MAX_SESSIONS_PER_KEY), and the budget: the worst case of one
response must fit. A refusal opens nothing
upstream: the handshake is accepted, one OpenAI-shaped `error` event says
why (the gateway's code: invalid_api_key, model_not_allowed,
budget_exceeded...), and the socket closes with 4000 + the HTTP status the
same refusal gets on /v1 (4401, 4403, 4429...). The SDK yields that event
like any other, which a refused HTTP upgrade (a bare 403, no body) would not.

Then the gateway opens the provider's WebSocket (proxy.realtime_connect)
with the provider's own credential: OpenAI's
`wss://<base>/realtime?model=<upstream model>` with `Authorization: Bearer`,
Azure's `<base>/realtime?api-version=...&deployment=...` with `api-key`. `OpenAI-Beta` (or the `openai-beta.realtime-v1`
subprotocol) is passed on, so both the GA protocol and the beta one work.
Frames are relayed both ways as they are, text and binary, each send
awaited (the server's own buffers are the only queue), and each side is
closed when the other goes. proxy.realtime_usage keeps the books.

A session ends after PROXY_REALTIME_IDLE_TIMEOUT_SECONDS without a frame
either way, or PROXY_REALTIME_MAX_SESSION_SECONDS after it opened, with an
`error` event (`session_idle_timeout`, `session_expired`) and close 1000.
When the provider goes, the client gets its close code (4502 for one a
client may not see, after an `upstream_disconnected` event). On shutdown
`realtime_drain` ends every session with `server_shutdown` and close 4503,
recording the responses still open.
"""

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from gateway.kernel.context import RouteTarget
from gateway.kernel.errors import GatewayError
from gateway.kernel.requestid import new_request_id
from proxy.realtime_connect import Admitted, offered_subprotocols, session_admit, upstream_open
from proxy.realtime_usage import RealtimeBooks, client_event_id

log = logging.getLogger(__name__)

REALTIME_PATH = "/v1/realtime"
SUBPROTOCOL = "realtime"
# Close codes to the client: 1000, or 4000 + the HTTP status the same refusal
# gets on /v1 (4401 a bad key, 4403, 4429...), as the live feed closes. daphne's
# WebSocket library lets an application send 1000 and 3000-4999 only (1008 or
# 1012 would end as 1011 there), so the registered 10xx codes are not used.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001  # to the provider, when the client left
CLOSE_APPLICATION = 4000


def close_code_for(status: int) -> int:
    return CLOSE_APPLICATION + status


def _sendable(code: int | None) -> bool:
    return code == CLOSE_NORMAL or (code is not None and 3000 <= code <= 4999)


SHUTDOWN, IDLE, EXPIRED = "server_shutdown", "session_idle_timeout", "session_expired"
CLIENT_GONE, UPSTREAM_GONE = "client_disconnected", "upstream_disconnected"

# Open sessions of this process; listeners hear the count on each change
# (gateway.metrics: the open-sessions gauge).
_sessions: "set[RealtimeSession]" = set()
session_listeners: list[Callable[[int], None]] = []


def sessions_open() -> int:
    return len(_sessions)


def error_event(error: GatewayError, *, event_id: str | None = None) -> str:
    """A refusal as the realtime API's `error` event (`event_id`: the client
    event it answers)."""
    kind = "invalid_request_error" if error.status < 500 else "server_error"
    body = {"type": kind, "code": error.code, "message": error.message, "param": error.param, "event_id": event_id}
    return orjson.dumps({"type": "error", "event_id": "event_" + uuid.uuid4().hex[:20], "error": body}).decode()


# --- one session ------------------------------------------------------------------------


class RealtimeSession:
    """The relay between one client and its provider socket, and its books."""

    def __init__(
        self,
        consumer: "RealtimeConsumer",
        admitted: Admitted,
        target: RouteTarget,
        upstream: aiohttp.ClientWebSocketResponse,
        session_id: str,
    ) -> None:
        self.consumer = consumer
        self.admitted = admitted
        self.upstream = upstream
        self.books = RealtimeBooks(admitted.ctx, target, session_id)
        self.loop = asyncio.get_running_loop()
        self.started = self.last_frame = time.monotonic()
        self.ended = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._tokens = 0

    def start(self) -> None:
        _sessions.add(self)
        _tell_listeners()
        for work in (self._relay_upstream(), self._watch()):
            task = self.loop.create_task(work)
            self._tasks.add(task)

    # client -> provider
    async def from_client(self, text: str | None, data: bytes | None) -> None:
        self.last_frame = time.monotonic()
        if self.ended:
            return
        try:
            if text is not None:
                text = await self._client_text(text)
                if text is not None:
                    await self.upstream.send_str(text)
            elif data is not None:
                await self.upstream.send_bytes(data)
        except (ConnectionError, RuntimeError, aiohttp.ClientError):  # the provider's socket is going away
            await self.end(UPSTREAM_GONE)

    async def _client_text(self, text: str) -> str | None:
        """The frame to pass on (None: refused, the client told why)."""
        try:
            event = orjson.loads(text)
        except orjson.JSONDecodeError:
            return text  # the provider answers it with its own error
        if not isinstance(event, dict):
            return text
        if event.get("type") != "response.create":
            self.books.client_event(event, len(text))
            return text
        if not isinstance(event.get("event_id"), str):
            event["event_id"] = client_event_id()
            text = orjson.dumps(event).decode()
        try:
            await self.books.response_create(event, len(text))
        except GatewayError as exc:
            await self._to_client(error_event(exc, event_id=event["event_id"]))
            return None
        return text

    # provider -> client
    async def _relay_upstream(self) -> None:
        code = None
        try:
            async for message in self.upstream:
                self.last_frame = time.monotonic()
                if message.type == aiohttp.WSMsgType.TEXT:
                    await self._upstream_text(message.data)
                elif message.type == aiohttp.WSMsgType.BINARY:
                    await self._to_client(data=message.data)
                else:  # CLOSE, CLOSING, CLOSED, ERROR
                    break
                if self.ended:
                    return
            code = self.upstream.close_code
        except (ConnectionError, RuntimeError, aiohttp.ClientError):
            log.debug("realtime: the provider's socket failed", exc_info=True)
        except Exception:  # a fault of ours must still end the session, not leave it hanging
            log.exception("realtime: the relay from the provider failed")
        await self.end(UPSTREAM_GONE, upstream_code=code)

    async def _upstream_text(self, text: str) -> None:
        try:
            event = orjson.loads(text)
        except orjson.JSONDecodeError:
            event = None
        refused = await self.books.upstream_event(event) if isinstance(event, dict) else None
        await self._to_client(text)
        if refused is not None:  # a response the provider started that the budget cannot take
            response_id, error = refused
            await self.upstream.send_str(orjson.dumps({"type": "response.cancel", "response_id": response_id}).decode())
            await self._to_client(error_event(error))

    async def _to_client(self, text: str | None = None, data: bytes | None = None) -> None:
        try:
            await self.consumer.send(text_data=text, bytes_data=data)
        except Exception:  # the client is gone; its disconnect ends the session
            log.debug("realtime: a frame for a departed client was dropped", exc_info=True)

    async def _watch(self) -> None:
        """End the session when it idles too long or reaches its maximum length."""
        idle, longest = settings.PROXY_REALTIME_IDLE_TIMEOUT_SECONDS, settings.PROXY_REALTIME_MAX_SESSION_SECONDS
        while not self.ended:
            now = time.monotonic()
            if now >= self.started + longest:
                return await self.end(EXPIRED)
            if now >= self.last_frame + idle:
                return await self.end(IDLE)
            await asyncio.sleep(min(self.started + longest, self.last_frame + idle) - now)

    # the end
    async def end(self, reason: str, *, client_code: int | None = None, upstream_code: int | None = None) -> None:
        """Record what is open, then close both sides (once, whoever asks first)."""
        if self.ended:
            return
        self.ended = True
        gone = reason == CLIENT_GONE
        self.books.close(error_code=reason, client_disconnected=gone)
        self.admitted.release()
        _sessions.discard(self)
        _tell_listeners()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        # The client first: at a shutdown the server closes its socket soon after
        # the signal, and the provider's close handshake may take a while.
        if not gone:
            await self._close_client(reason, upstream_code)
        await self._close_upstream(client_code)

    async def _close_upstream(self, client_code: int | None) -> None:
        code = client_code if _sendable(client_code) else CLOSE_GOING_AWAY
        assert code is not None
        try:
            async with asyncio.timeout(5):
                await self.upstream.close(code=code)
        except Exception:
            log.debug("realtime: the provider's socket did not close cleanly", exc_info=True)

    async def _close_client(self, reason: str, upstream_code: int | None) -> None:
        code, message = _ENDINGS.get(reason, (CLOSE_NORMAL, ""))
        if reason == UPSTREAM_GONE:  # the provider's own code when a client may see it, else 4502
            code = upstream_code if upstream_code is not None and _sendable(upstream_code) else close_code_for(502)
            if code != CLOSE_NORMAL:
                message = "The provider closed the realtime session."
        if message:
            retry = reason in (SHUTDOWN, UPSTREAM_GONE)
            status = 503 if retry else 400
            await self._to_client(error_event(GatewayError(status, reason, message, retryable=retry)))
        try:
            await self.consumer.close(code=code)
        except Exception:
            log.debug("realtime: the client's socket was already closed", exc_info=True)

    def shutdown_soon(self) -> None:
        """From the server's shutdown (any thread): end with server_shutdown."""
        task = self.loop.create_task(self.end(SHUTDOWN))
        _draining.add(task)
        task.add_done_callback(_draining.discard)


_ENDINGS = {
    SHUTDOWN: (close_code_for(503), "The gateway is restarting and closed this session; connect again."),
    IDLE: (CLOSE_NORMAL, "The session was idle too long and was closed."),
    EXPIRED: (CLOSE_NORMAL, "The session reached its maximum duration and was closed."),
}
_draining: set[asyncio.Task[None]] = set()
_shutting_down = False


def _tell_listeners() -> None:
    for listener in session_listeners:
        try:
            listener(len(_sessions))
        except Exception:
            log.debug("realtime: a session listener failed", exc_info=True)


def realtime_drain_soon() -> None:
    """Shutdown (safe from a signal handler): every open session ends with a
    `server_shutdown` error event and close 4503, its open responses recorded."""
    global _shutting_down
    _shutting_down = True
    for session in list(_sessions):
        try:
            session.loop.call_soon_threadsafe(session.shutdown_soon)
        except RuntimeError:  # its loop is closed: nothing left to send on
            session.books.close(error_code=SHUTDOWN)


async def realtime_drain(timeout: float = 5.0) -> int:
    """End every open session (see realtime_drain_soon) and wait, at most
    `timeout`, until each has; returns how many were open."""
    count = len(_sessions)
    realtime_drain_soon()
    await asyncio.sleep(0)  # let the ends scheduled on this loop start
    deadline = time.monotonic() + timeout
    while (_sessions or _draining) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return count


# --- the channels consumer: transport glue -------------------------------------------------


class RealtimeConsumer(AsyncWebsocketConsumer):
    """One client's WebSocket. No channel layer: a session lives in its process."""

    channel_layer_alias = "realtime-needs-no-channel-layer"
    session: RealtimeSession | None = None

    async def connect(self) -> None:
        offered = offered_subprotocols(self.scope)
        subprotocol = SUBPROTOCOL if SUBPROTOCOL in offered else None
        session_id = new_request_id()
        try:
            admitted = await session_admit(self.scope)
        except GatewayError as exc:
            return await self._refuse(exc, subprotocol)
        except Exception:  # a fault of ours: still an answer in the API's shape, never a bare 500
            log.exception("realtime: a session could not be admitted")
            return await self._refuse(GatewayError(500, "internal_error", "The gateway failed."), subprotocol)
        try:
            upstream, target = await upstream_open(admitted)
        except GatewayError as exc:
            admitted.release()
            return await self._refuse(exc, subprotocol)
        except BaseException:
            admitted.release()
            raise
        self.session = RealtimeSession(self, admitted, target, upstream, session_id)
        await self.accept(subprotocol, headers=[(b"x-request-id", session_id.encode())])
        self.session.start()

    async def _refuse(self, error: GatewayError, subprotocol: str | None) -> None:
        """Accepted, told why in an `error` event, closed: nothing was opened upstream."""
        await self.accept(subprotocol)
        await self.send(text_data=error_event(error))
        await self.close(code=close_code_for(error.status))

    async def dispatch(self, message: dict[str, Any]) -> None:
        # channels closes stale database connections (a thread hop) before every
        # handler; a session's frames touch no database, and audio comes in dozens a second.
        if message["type"] == "websocket.receive":
            await self.websocket_receive(message)
        else:
            await super().dispatch(message)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.session is not None:
            await self.session.from_client(text_data, bytes_data)

    async def disconnect(self, code: int) -> None:
        if self.session is not None:
            # uvicorn closes every socket itself (1012) after SIGTERM: that is the shutdown, not the client.
            await self.session.end(SHUTDOWN if _shutting_down else CLIENT_GONE, client_code=code)
