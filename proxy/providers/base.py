"""What the forwarding code needs from each kind of provider."""

from dataclasses import dataclass, field
from typing import Any, Protocol

from proxy.context import ProviderConfig, Usage


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    url: str
    headers: dict[str, str] = field(repr=False)  # carries the provider's credential
    body: bytes = field(repr=False)


class StreamObserver(Protocol):
    """Watches a stream's events as they pass; never changes them except to
    drop an event the gateway added for itself."""

    usage: Usage | None
    output_chars: int
    finished: bool

    def observe(self, data: bytes) -> bool:
        """Look at one event's `data:` payload; return False to drop the event."""


class ProviderAdapter(Protocol):
    def chat_request(
        self, provider: ProviderConfig, upstream_model: str, body: dict[str, Any], stream: bool
    ) -> tuple[UpstreamRequest, StreamObserver | None]:
        """The upstream call for a chat request, and an observer for its stream."""

    def embeddings_request(self, provider: ProviderConfig, upstream_model: str, body: dict[str, Any]) -> UpstreamRequest:
        """The upstream call for an embeddings request."""

    def usage_from_response(self, data: Any) -> Usage | None:
        """Token usage from a non-streamed JSON answer."""
