"""The two HTTP handlers behind gateway.asgi and the router between them."""

import asyncio
import contextlib
import io
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http.response import HttpResponseBase
from django.urls import set_script_prefix

from gateway import lifecycle
from gateway.kernel.errors import error_body
from proxy.apis.registry import error_format_for_path

Scope = dict[str, Any]
Message = Mapping[str, Any]  # as Django's stubs type ASGI messages
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ApiHandler(ASGIHandler):
    """Django's ASGI handler with the API's own (short) middleware list, minus
    the parts of Django's request cycle that cost a thread per request.

    Django wraps each request in a ThreadSensitiveContext, sends
    `request_started` and `request_finished` (whose receivers are sync, so
    each send is a thread hop), spools the body into a temporary file and
    closes the response in a thread. Under a ThreadSensitiveContext the first
    hop of a request even starts a thread of its own, joined at the end.
    The receivers only tidy database connections, and the API does no
    database work once warm: its cold loads run in asgiref's one shared
    thread and give their connection back themselves
    (accounts.snapshots._release_connection). So none of that is done here;
    everything else (disconnect watch, cancellation, streaming) is Django's.
    """

    def load_middleware(self, is_async: bool = False) -> None:
        full = settings.MIDDLEWARE
        settings.MIDDLEWARE = settings.API_MIDDLEWARE
        try:
            super().load_middleware(is_async=is_async)
        finally:
            settings.MIDDLEWARE = full

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        lifecycle.ensure_background_tasks()  # the first request of a loop starts its writer and watcher
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            assert error_response is not None  # Django returns one or the other
            await self.send_response(error_response, send)
            _close(error_response)
            return

        async def process_request() -> HttpResponseBase:
            response = await self.run_get_response(request)
            with contextlib.suppress(asyncio.CancelledError):  # the client went away while it was sent
                await self.send_response(response, send)
            return response

        disconnect = asyncio.create_task(self.listen_for_disconnect(receive))
        processing = asyncio.create_task(process_request())
        try:
            await asyncio.wait((disconnect, processing), return_when=asyncio.FIRST_COMPLETED)
            for task in (disconnect, processing):  # as Django: the watcher first, then the view
                if not task.done():
                    task.cancel()  # the view sees the cancellation (a disconnected stream is recorded so)
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            _raise_unexpected(disconnect)
            if not processing.cancelled():
                _close(processing.result())
        finally:
            # A task's exception holds a traceback through this frame, and
            # this frame held the task: without this, every request left a
            # reference cycle (tasks, request, response) for the collector,
            # whose pauses were the gateway's slowest requests.
            del disconnect, processing

    async def read_body(self, receive: Receive) -> io.BytesIO:
        """In memory: body_limit_guard has read and capped it already."""
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RequestAborted()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return io.BytesIO(b"".join(chunks))


def _raise_unexpected(watcher: "asyncio.Task[None]") -> None:
    """The disconnect watcher ends with RequestAborted (the client left, or the
    response is complete); anything else is a bug worth raising."""
    if watcher.done() and not watcher.cancelled():
        error = watcher.exception()
        if error is not None and not isinstance(error, RequestAborted):
            raise error


def _close(response: HttpResponseBase) -> None:
    """HttpResponseBase.close() without its request_finished signal (see ApiHandler)."""
    closers = response._resource_closers  # type: ignore[attr-defined]  # private, absent from the stubs
    for closer in closers:
        with contextlib.suppress(Exception):
            closer()
    closers.clear()
    response.closed = True


async def _send_json_error(send: Send, scope: Scope, status: int, code: str, message: str) -> None:
    fmt = error_format_for_path(scope["path"])
    body = error_body(fmt, status=status, code=code, message=message)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def body_limit_guard(app: ASGIApp) -> ASGIApp:
    """Read the body with a hard limit before Django does.

    Django would spool any size to disk first and then answer a plain-text
    413; clients of an LLM API expect the error in the API's own envelope.
    """

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        limit = settings.PROXY_MAX_BODY_BYTES
        declared = _content_length(scope)
        if declared == -1:
            return await _send_json_error(send, scope, 400, "invalid_request", "Invalid Content-Length header.")
        too_big = f"Request body is larger than the limit of {limit} bytes."
        if declared is not None and declared > limit:
            return await _send_json_error(send, scope, 413, "request_too_large", too_big)
        chunks: list[bytes] = []
        size = 0
        try:
            # The whole body within PROXY_BODY_READ_TIMEOUT: a client that
            # declares more than it sends (or drips it) would hold the
            # request, and its slot, forever.
            async with asyncio.timeout(settings.PROXY_BODY_READ_TIMEOUT):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        return await _send_json_error(send, scope, 413, "request_too_large", too_big)
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            timeout = settings.PROXY_BODY_READ_TIMEOUT
            return await _send_json_error(
                send, scope, 408, "request_body_timeout", f"The request body did not arrive within {timeout:g} seconds."
            )
        whole = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        del chunks  # a stream can last minutes: hold its request body once, not twice
        return await app(scope, replaying(whole, receive), send)

    return guarded


def replaying(message: Message, receive: Receive) -> Receive:
    """`receive` that gives `message` first (taken from it already, or the
    whole body in one); later calls wait on `receive` for http.disconnect."""
    taken = False

    async def replay() -> Message:
        nonlocal taken
        if taken:
            return await receive()
        taken = True
        return message

    return replay


def _content_length(scope: Scope) -> int | None:
    """The declared body size; None when absent, -1 when malformed."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                return -1
            return declared if declared >= 0 else -1
    return None


def _provider_in_path(path: str) -> bool:
    """`/<provider>/v1/...`: the API for clients that put the provider in the URL."""
    second = path.find("/", 1)
    return second > 1 and path.startswith("/v1/", second)


def split_by_path(*, api_app: ASGIApp, admin_app: ASGIApp) -> ASGIApp:
    prefixes = tuple(settings.API_PATH_PREFIXES)

    async def route(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        app = api_app if path.startswith(prefixes) or _provider_in_path(path) else admin_app
        await app(scope, receive, send)

    return route
