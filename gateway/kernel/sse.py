"""Server-sent events: cutting a byte stream into events and reading their data.

Shared by the relay (proxy.streaming) and the cache's replay (cachestore.replay).
"""

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
