"""Relays an upstream SSE stream to the client as it arrives.

Bytes pass through untouched; the relay only cuts the stream at event
boundaries so the provider's observer can read usage and drop the one event
the gateway itself asked for. Nothing waits for more than the rest of a
partial event.
"""

import asyncio
from collections.abc import AsyncIterator

import aiohttp
from django.http import StreamingHttpResponse

from proxy.errors import ApiFormat, GatewayError
from proxy.providers.base import StreamObserver
from proxy.upstream import upstream_failure
from proxy.usage import UsageRecorder

_SEPARATOR = b"\n\n"
MAX_EVENT_BYTES = 8 * 1024 * 1024  # no event of any provider comes near this


class SSEOverflowError(ValueError):
    """The upstream sent more than MAX_EVENT_BYTES without ending an event."""


class SSESplitter:
    """Cuts a byte stream into complete SSE events (each with its separator)."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        buffer = self._buffer + chunk
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        events: list[bytes] = []
        start = 0
        while (end := buffer.find(_SEPARATOR, start)) != -1:
            events.append(buffer[start : end + 2])
            start = end + 2
        self._buffer = buffer[start:]
        if len(self._buffer) > MAX_EVENT_BYTES:
            raise SSEOverflowError("the upstream stream is not server-sent events")
        return events

    def rest(self) -> bytes:
        rest, self._buffer = self._buffer, b""
        return rest


def event_data(event: bytes) -> bytes | None:
    """The joined `data:` lines of one event, or None when it has none."""
    parts = [line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(parts) if parts else None


async def relay_stream(
    response: aiohttp.ClientResponse, observer: StreamObserver, recorder: UsageRecorder, fmt: ApiFormat
) -> AsyncIterator[bytes]:
    """Yield the upstream's events; record usage however the stream ends.

    The `finally` runs on normal end, on upstream failure and when the
    client disconnects (CancelledError or GeneratorExit at the next await);
    it closes the upstream connection so the provider stops generating.
    """
    splitter = SSESplitter()
    completed = False
    error_code = ""
    try:
        async for chunk in response.content.iter_any():
            recorder.first_token()
            events = splitter.feed(chunk)
            if recorder.fill is not None:
                for event in events:
                    recorder.fill.add(event)
            kept = [e for e in events if _keep(e, observer)]
            if kept:
                yield b"".join(kept)
        tail = splitter.rest()
        if tail.strip():
            yield tail
        completed = True
    except (aiohttp.ClientError, TimeoutError, SSEOverflowError) as exc:
        provider = recorder.target.provider.name
        reason = str(exc) if isinstance(exc, SSEOverflowError) else upstream_failure(exc, provider).message
        error_code = "upstream_stream_interrupted"
        yield stream_error_event(fmt, GatewayError(502, error_code, f"The stream from '{provider}' broke off: {reason}"))
    finally:
        if completed:
            response.release()
        else:
            response.close()  # aborts the upstream request: generation stops
        recorder.finish(
            status=200,
            error_code=error_code or ("" if completed else "client_disconnected"),
            client_disconnected=not completed and not error_code,
        )


class RelayResponse(StreamingHttpResponse):
    """A relayed stream that is recorded even if it never starts.

    A client can disconnect after the view returned but before the server
    first iterates the generator; its `finally` then never runs. Django
    still closes the response, so the close hook records the request and
    aborts the upstream call (on the loop: aiohttp is not thread-safe, and
    Django calls `close()` from a worker thread).
    """

    def __init__(
        self,
        response: aiohttp.ClientResponse,
        observer: StreamObserver,
        recorder: UsageRecorder,
        fmt: ApiFormat,
    ) -> None:
        super().__init__(relay_stream(response, observer, recorder, fmt), content_type="text/event-stream")
        self["Cache-Control"] = "no-cache"
        self["X-Accel-Buffering"] = "no"
        self._upstream = response
        self._recorder = recorder
        self._loop = asyncio.get_running_loop()

    def close(self) -> None:
        try:
            if not self._recorder.recorded:
                self._loop.call_soon_threadsafe(self._abandon)
        finally:
            super().close()

    def _abandon(self) -> None:
        if not self._recorder.recorded:
            self._upstream.close()
            self._recorder.finish(status=200, error_code="client_disconnected", client_disconnected=True)


def _keep(event: bytes, observer: StreamObserver) -> bool:
    data = event_data(event)
    return data is None or observer.observe(data)


def stream_error_event(fmt: ApiFormat, error: GatewayError) -> bytes:
    """An error after the first byte can only travel inside the stream."""
    if fmt is ApiFormat.ANTHROPIC:
        return b"event: error\ndata: " + error.body(fmt) + b"\n\n"
    return b"data: " + error.body(fmt) + b"\n\n"
