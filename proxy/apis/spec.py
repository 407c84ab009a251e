"""What one client API is: the fields every module of proxy.apis fills in.

The translators stay behind `client_side`, a function that imports its
proxy.translate module when a request first needs one: a process whose
clients and upstreams speak the same API never loads them.
"""

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson
from django.http import HttpRequest
from django.utils import timezone

from gateway.kernel.context import RouteTarget
from gateway.kernel.errors import ApiFormat
from proxy.apis.texts import ApiTexts
from proxy.dialects import ClientCall, Dialect
from proxy.translate import StreamTranslator, Translated

SSE = "text/event-stream"
NDJSON = "application/x-ndjson"

# body, headers, query string: every parser takes the three, and reads what its API needs.
Parser = Callable[[bytes, Mapping[str, str], str], ClientCall]


def sse_data(event: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(event) + b"\n\n"


def sse_named(event: dict[str, Any]) -> bytes:
    return b"event: " + str(event.get("type", "message")).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def ndjson(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event) + b"\n"


@dataclass(frozen=True)
class StreamShape:
    """How the client's API writes a stream."""

    encode: Callable[[dict[str, Any]], bytes]
    end: bytes = b""
    content_type: str = SSE


CHAT_STREAM = StreamShape(sse_data, b"data: [DONE]\n\n")


@dataclass(frozen=True)
class HubNames:
    """Identifiers a translated answer carries (the upstream's own do not fit)."""

    public_model: str
    completion_id: str
    created: int
    created_at: str  # ISO 8601, for Ollama

    @classmethod
    def new(cls, target: RouteTarget) -> "HubNames":
        return cls(
            public_model=target.public_model,  # the name the client asked for
            completion_id=uuid.uuid4().hex,
            created=int(time.time()),
            created_at=timezone.now().isoformat().replace("+00:00", "Z"),
        )


class ClientSide(NamedTuple):
    """A client API's translators for one call: its request to the hub, the
    hub's answer back, and (for a stream) a factory of the stream's translator."""

    to_hub: Callable[..., Translated]
    from_hub_json: Callable[[dict[str, Any]], dict[str, Any]]
    from_hub_stream: Callable[[], StreamTranslator] | None


@dataclass(frozen=True)
class DialectSpec:
    """Everything the gateway knows of one client API, read by the views
    (parse), the error paths (error_format), the pipeline and the cache lane
    (cacheable), the guardrails and the usage estimates (texts) and the
    exchange (the rest)."""

    dialect: Dialect
    # Where clients call it under /v1 (or Ollama's /api/); the first is its own.
    paths: tuple[str, ...]
    parse: Parser
    # Where the text is in its requests, answers and stream events (every
    # API's requests carry some: an image's or a transcription's prompt).
    texts: ApiTexts
    error_format: ApiFormat = ApiFormat.OPENAI
    # None: it never streams (embeddings, count_tokens), or the media relay writes it.
    stream: StreamShape | None = None
    # Whether its answers go through the response cache (which replays them
    # as JSON or as a stream, whichever the client asks).
    cacheable: bool = False
    # Its translators through the hub; None: it reaches only providers that serve it natively.
    client_side: Callable[[ClientCall, HubNames], ClientSide] | None = None
    # Whether the hub answer must carry usage the client did not ask for
    # (every translator needs it; a chat client asks itself).
    hub_usage_chunk: bool = True
    # Whether a 404 from the native endpoint of an OpenAI-protocol provider
    # is answered by translating to chat completions instead.
    translated_when_missing: bool = False
    # The body a native upstream gets, when not the client's own (a
    # Responses call's stored conversation).
    native_body: Callable[[ClientCall], dict[str, Any]] | None = None
    # Whether /<provider>/v1/... serves it too (proxy.compat): the JSON APIs of /v1.
    provider_in_path: bool = True

    def parse_request(self, request: HttpRequest) -> ClientCall:
        return self.parse(request.body, request.headers, request.META.get("QUERY_STRING", ""))

    def parse_body(self, raw: bytes) -> ClientCall:
        """For an API whose parser reads the body alone (the cacheable ones, in the cache lane)."""
        return self.parse(raw, {}, "")
