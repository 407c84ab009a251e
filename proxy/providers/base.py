"""What the forwarding code needs from each kind of provider.

`ProviderAdapter` is the one interface every wire protocol offers
proxy.exchange (which calls no protocol by name); proxy.providers.registry
says which adapter serves which protocol.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from gateway.kernel.context import ProviderConfig, Usage
from proxy.dialects import ClientCall, Dialect
from proxy.presets import Preset
from proxy.translate import StreamTranslator


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


UsageReader = Callable[[Any], Usage | None]


@dataclass(frozen=True, slots=True)
class NativeCall:
    """A client call spoken to an upstream that serves its dialect: the body
    passes through (model replaced) and so does the answer."""

    request: UpstreamRequest
    observer: StreamObserver | None  # reads usage from the upstream's own stream
    usage_from_json: UsageReader


@dataclass(frozen=True, slots=True)
class HubAnswer:
    """What a chat completion made from another protocol's answer carries:
    the name the client asked for, and identifiers the gateway makes up."""

    public_model: str
    completion_id: str
    created: int
    # The usage chunk reaches the hub side even unasked: a translator there needs it.
    usage_chunk: bool


@dataclass(frozen=True, slots=True)
class HubCall:
    """A chat-completions (hub) call as one protocol speaks it, and how its
    answer becomes a chat completion again."""

    request: UpstreamRequest
    observer: StreamObserver | None
    usage_from_json: UsageReader
    answer_to_hub: Callable[[dict[str, Any]], dict[str, Any]]
    stream_to_hub: StreamTranslator | None = None  # None: the stream already is chat chunks
    notes: list[str] = field(default_factory=list)  # what the protocol could not say


@runtime_checkable
class ProviderAdapter(Protocol):
    """One wire protocol (proxy.presets' OPENAI, AZURE, ANTHROPIC...) as an upstream."""

    def native_dialects(self, preset: Preset) -> frozenset[Dialect]:
        """The client dialects a provider of this preset serves as they are."""

    def native_request(
        self, call: ClientCall, provider: ProviderConfig, upstream_model: str, body: dict[str, Any]
    ) -> NativeCall:
        """`call` (one of the native dialects) with `body` in place of its own."""

    def hub_request(
        self, provider: ProviderConfig, upstream_model: str, body: dict[str, Any], stream: bool, answer: HubAnswer
    ) -> HubCall:
        """A chat completions body, spoken in this protocol. Loads its
        translator (proxy.translate) here, only when a request needs it."""

    def media_endpoint(
        self, provider: ProviderConfig, upstream_model: str, path: str, *, accept: str
    ) -> tuple[str, dict[str, str]] | None:
        """The URL and headers (credential, no Content-Type) of a media
        endpoint (proxy.media's paths); None: the protocol has none."""

    def realtime_endpoint(
        self, provider: ProviderConfig, upstream_model: str, query: list[tuple[str, str]], beta: str
    ) -> tuple[str, dict[str, str]] | None:
        """The realtime socket's URL (ws or wss, as the base URL's scheme) and
        headers (the provider's credential, never the client's); None: none."""

    def usage_from_response(self, data: Any) -> Usage | None:
        """The usage of a non-streamed answer."""

    def model_list_endpoint(self, provider: ProviderConfig) -> tuple[str, dict[str, str]] | None:
        """The URL and headers (the provider's credential) of its model list,
        when that list's entries may carry a `description` (OpenRouter's and
        some OpenAI-compatible servers' do); None: the protocol's list has none
        (proxy.descriptions)."""
