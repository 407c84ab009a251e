"""How a relayed stream ends, whichever relay carries it (proxy.streaming's
events, proxy.media_relay's audio): cut at the server's shutdown, broken off
by the upstream, past PROXY_MAX_RESPONSE_BYTES, or left by the client; in
every case the upstream connection is given back or aborted and the request
is recorded once.
"""

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
from django.conf import settings
from django.http import StreamingHttpResponse

from gateway.kernel.context import Usage
from gateway.kernel.errors import ApiFormat, GatewayError
from gateway.kernel.sse import SSEOverflowError
from proxy.upstream import too_large, upstream_failure
from proxy.usage import UsageRecorder

INTERRUPTED = "upstream_stream_interrupted"
SHUTDOWN = "server_shutdown"
# When the server is stopping, streams still open at this monotonic time are
# cut with an error event (set by gateway.lifecycle on SIGTERM; None: serving).
_cut_at: float | None = None


def streams_cut_at(deadline: float | None) -> None:
    """From `deadline` on, every open stream ends at its next chunk with a
    `server_shutdown` error event and is recorded so (None: never)."""
    global _cut_at
    _cut_at = deadline


class ShutdownCutError(Exception):
    """Raised in a relay at its next chunk once the shutdown deadline has passed."""


def shutdown_check() -> None:
    if _cut_at is not None and time.monotonic() >= _cut_at:
        raise ShutdownCutError


def shutdown_event(fmt: ApiFormat) -> bytes:
    message = "The gateway is restarting and cut this stream; send the request again."
    return GatewayError(503, SHUTDOWN, message, retryable=True).event(fmt)


BROKEN_OFF = (aiohttp.ClientError, TimeoutError, SSEOverflowError)


class ByteBudget:
    """PROXY_MAX_RESPONSE_BYTES for a stream: past it the stream is cut
    (UpstreamTooLargeError), as a non-streamed answer that large is refused."""

    __slots__ = ("left", "_provider", "_limit")

    def __init__(self, recorder: UsageRecorder) -> None:
        self._limit = self.left = settings.PROXY_MAX_RESPONSE_BYTES
        self._provider = recorder.target.provider.name

    def spend(self, chunk: bytes) -> None:
        self.left -= len(chunk)
        if self.left < 0:
            raise too_large(self._provider, self._limit)


def broken_off(exc: BaseException, recorder: UsageRecorder) -> GatewayError:
    provider = recorder.target.provider.name
    reason = str(exc) if isinstance(exc, SSEOverflowError) else upstream_failure(exc, provider).message
    return GatewayError(502, INTERRUPTED, f"The stream from '{provider}' broke off: {reason}")


def stream_ended(
    response: aiohttp.ClientResponse,
    recorder: UsageRecorder,
    completed: bool,
    error_code: str,
    *,
    usage: Usage | None = None,
) -> None:
    """However a stream ended: give the connection back (or abort the
    upstream request, so generation stops) and record the request once
    (`usage`: what a cut stream relayed)."""
    if completed:
        response.release()
    else:
        response.close()
    if not completed and not error_code and _cut_at is not None:
        error_code = SHUTDOWN  # the server cancelled it on its way out: not the client's doing
    recorder.finish(
        status=200,
        usage=usage,
        usage_estimated=usage is not None,
        error_code=error_code or ("" if completed else "client_disconnected"),
        client_disconnected=not completed and not error_code,
    )


class RecordedStreamingResponse(StreamingHttpResponse):
    """A relayed stream that is recorded even if it never starts.

    A client can disconnect after the view returned but before the server
    first iterates the generator; its `finally` then never runs. Django
    still closes the response, so the close hook records the request and
    aborts the upstream call (on the loop: aiohttp is not thread-safe, and
    Django calls `close()` from a worker thread).
    """

    def __init__(
        self, stream: AsyncIterator[bytes], response: aiohttp.ClientResponse, recorder: UsageRecorder, content_type: str
    ) -> None:
        super().__init__(stream, content_type=content_type)
        self["Cache-Control"] = "no-cache"
        self["X-Accel-Buffering"] = "no"  # proxies in front must not buffer it either
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
