"""What the forwarding code needs from each kind of provider."""

from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.kernel.context import Usage


def token_count(value: Any) -> int:
    """A token count a provider reported: anything but a positive integer
    (null, absent, negative, a string) counts as none."""
    return value if isinstance(value, int) and value > 0 else 0


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    url: str
    headers: dict[str, str] = field(repr=False)  # carries the provider's credential
    body: bytes = field(repr=False)


class StreamObserver(Protocol):
    """Watches a stream's events as they pass; never changes them except to
    drop an event the gateway added for itself."""

    output_chars: int
    finished: bool

    @property
    def usage(self) -> Usage | None:
        """What the stream reported (or suggests) so far."""

    def observe(self, data: bytes) -> bool:
        """Look at one event's `data:` payload; return False to drop the event."""
