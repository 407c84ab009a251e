"""How one client call is spoken to one upstream, and its answer brought back.

When the provider serves the client's dialect natively the body passes
through with only `model` replaced, and the answer's bytes come back
untouched. Otherwise the request goes through the hub dialect (chat
completions): client dialect -> chat -> the provider's protocol, and the
answer the same way back. An `Exchange` holds everything the forwarding
code needs for either case; it is built per attempt, because a fallback may
land on a provider of another protocol.

What differs between wire protocols is the adapter's business
(proxy.providers.registry.adapter_for): nothing here names a protocol.
"""

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from django.http.response import HttpResponseBase
from django.utils import timezone

from gateway.kernel.context import PriceSnapshot, RouteTarget, Usage
from gateway.kernel.errors import GatewayError, invalid_request
from proxy.dialects import ClientCall, Dialect
from proxy.presets import preset_for
from proxy.providers.base import HubAnswer, StreamObserver, UpstreamRequest
from proxy.providers.registry import adapter_for
from proxy.responses_state import ResponseKeeper, conversation_body, response_keeper

# The translators (proxy.translate's modules) are imported where a request
# needs one: a process whose clients and upstreams speak the same API never
# loads them (0.7 MB of a server process's memory at start-up, measured).
from proxy.translate import StreamTranslator, Translated, TranslationError

log = logging.getLogger(__name__)

SSE = "text/event-stream"
NDJSON = "application/x-ndjson"
NOTES_HEADER = "x-gateway-translation-notes"
_NOTES_MAX = 2000  # header bytes; proxies reject huge headers
# Dialects an OpenAI-protocol provider may lack although its kind says it
# serves them (a server behind kind `openai` without /responses): a 404
# there is answered by translating to chat completions instead.
_FALLBACK_DIALECTS = frozenset({Dialect.RESPONSES, Dialect.COMPLETIONS})
# (provider name, base URL, dialect) whose native endpoint answered 404 and
# whose translation then answered: translated at once from then on. Per
# process, and reset by a restart or a new base URL: a provider that later
# gains the endpoint is used natively again then.
_NATIVE_MISSING: set[tuple[str, str, Dialect]] = set()


def _sse_data(event: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(event) + b"\n\n"


def _sse_named(event: dict[str, Any]) -> bytes:
    return b"event: " + str(event.get("type", "message")).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def _ndjson(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event) + b"\n"


@dataclass(frozen=True)
class StreamShape:
    """How the client's dialect writes a stream."""

    encode: Callable[[dict[str, Any]], bytes]
    end: bytes = b""
    content_type: str = SSE


_CHAT_STREAM = StreamShape(_sse_data, b"data: [DONE]\n\n")
_SHAPES = {
    Dialect.CHAT: _CHAT_STREAM,
    Dialect.COMPLETIONS: _CHAT_STREAM,
    Dialect.MESSAGES: StreamShape(_sse_named),
    Dialect.RESPONSES: StreamShape(_sse_named),
    Dialect.OLLAMA_CHAT: StreamShape(_ndjson, content_type=NDJSON),
    Dialect.OLLAMA_GENERATE: StreamShape(_ndjson, content_type=NDJSON),
}


@dataclass
class Exchange:
    request: UpstreamRequest
    observer: StreamObserver | None  # reads usage from the upstream's own stream
    usage_from_json: Callable[[Any], Usage | None]
    # None: the upstream's answer passes through as it is
    answer_json: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    translators: list[StreamTranslator] | None = None
    shape: StreamShape = _CHAT_STREAM
    notes: list[str] = field(default_factory=list)
    # A translated Responses answer to store once complete (proxy.responses_state).
    keeper: ResponseKeeper | None = None
    # The media endpoints (proxy.media): an answer relayed as raw bytes (speech),
    # and the price an answer is billed at when it says (an image's size and quality).
    relay: Callable[[Any, Any], HttpResponseBase] | None = None
    answer_price: Callable[[Any], PriceSnapshot | None] | None = None

    @property
    def translated(self) -> bool:
        return self.answer_json is not None

    def notes_header(self) -> str:
        """Once each, in order; printable ASCII only, since notes may quote
        field names from the client's request."""
        text = "; ".join(dict.fromkeys(self.notes))
        return "".join(c if " " <= c <= "~" else "?" for c in text)[:_NOTES_MAX]


def native_dialects(kind: str) -> frozenset[Dialect]:
    return adapter_for(kind).native_dialects(preset_for(kind))


def exchange_for(call: ClientCall, target: RouteTarget) -> Exchange:
    """The upstream request for `call` at `target`, and how to answer back.
    Raises GatewayError (400) when the call cannot be expressed there."""
    if call.media is not None:  # audio and images: OpenAI's endpoints, never translated
        return _media(call, target)
    try:
        if call.dialect in native_dialects(target.provider.kind):
            if _missing_key(call, target) not in _NATIVE_MISSING:
                return _native(call, target)
            exchange = _translated(call, target)
            exchange.notes.insert(0, _fallback_note(call, target))
            return exchange
        return _translated(call, target)
    except TranslationError as exc:
        raise invalid_request(str(exc), param=exc.param) from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        # A shape no translator expected: the client's request, not a 500
        # (logged, since it may also be a gap in a translator).
        log.warning(
            "a %s request could not be translated for %s", call.dialect.value, target.provider.kind, exc_info=True
        )
        raise invalid_request(f"The request cannot be translated for this model's provider: {exc!r}"[:300]) from None


def native_fallback(call: ClientCall, target: RouteTarget) -> Exchange | None:
    """The exchange to try when `call`'s native endpoint answered 404: the
    same call translated to chat completions, its notes saying why. None
    when there is nothing to fall back to (already translated, a dialect
    every such provider serves, or an Anthropic provider)."""
    if (
        call.dialect not in _FALLBACK_DIALECTS
        or call.dialect not in native_dialects(target.provider.kind)
        or _missing_key(call, target) in _NATIVE_MISSING
    ):
        return None
    try:
        exchange = _translated(call, target)
    except (TranslationError, KeyError, TypeError, ValueError, AttributeError, IndexError):
        return None  # not expressible as chat: the provider's 404 stands
    exchange.notes.insert(0, _fallback_note(call, target))
    return exchange


def native_missing_remember(call: ClientCall, target: RouteTarget) -> None:
    """The translation answered where the native endpoint was missing: later
    calls of this dialect to this provider are translated at once."""
    _NATIVE_MISSING.add(_missing_key(call, target))


def _missing_key(call: ClientCall, target: RouteTarget) -> tuple[str, str, Dialect]:
    return (target.provider.name, target.provider.base_url, call.dialect)


def _fallback_note(call: ClientCall, target: RouteTarget) -> str:
    path = "/responses" if call.dialect is Dialect.RESPONSES else "/completions"
    return f"translated: provider {target.provider.name} has no {path}, sent as chat completions"


def _native(call: ClientCall, target: RouteTarget) -> Exchange:
    provider = target.provider
    body = call.body
    if call.dialect is Dialect.RESPONSES:  # the stored conversation, for an id the gateway resolved
        body = conversation_body(call, native=True)
    native = adapter_for(provider.kind).native_request(call, provider, target.upstream_model, body)
    shape = _SHAPES.get(call.dialect, _CHAT_STREAM)  # embeddings and count_tokens never stream
    return Exchange(native.request, native.observer, native.usage_from_json, shape=shape)


def _media(call: ClientCall, target: RouteTarget) -> Exchange:
    from proxy import media, media_relay  # loaded with the first media request

    provider = target.provider
    speech = call.dialect is Dialect.SPEECH
    accept = "*/*" if speech else SSE if call.stream else "application/json"
    endpoint = adapter_for(provider.kind).media_endpoint(
        provider, target.upstream_model, media.PATHS[call.dialect], accept=accept
    )
    if endpoint is None:
        raise _unsupported(call, target)
    url, headers = endpoint
    return Exchange(
        media.media_request(call, target, headers, url),
        _media_observer(call),
        media.usage_reader(call),
        relay=media_relay.speech_relay if speech else None,
        answer_price=media.answer_price(call, target) if call.media.kind is media.MediaKind.IMAGE else None,
    )


def _media_observer(call: ClientCall) -> StreamObserver | None:
    """What watches a media stream for its usage: speech's always (its audio is a stream)."""
    from proxy import media, media_relay

    if call.dialect is Dialect.SPEECH:
        return media_relay.speech_observer(call)
    if not call.stream:
        return None
    if call.media.kind is media.MediaKind.IMAGE:
        return media_relay.image_stream_observer(call)
    return media_relay.transcript_observer(call)


def _translated(call: ClientCall, target: RouteTarget) -> Exchange:
    provider, model = target.provider, target.upstream_model
    if call.dialect in (Dialect.EMBEDDINGS, Dialect.COUNT_TOKENS):  # count_tokens is answered before routing
        raise _unsupported(call, target)
    names = _Names.new(target)
    to_hub, from_hub_json, from_hub_stream = _client_side(call, names)
    hub = to_hub(call.body, upstream_model=model)
    answer = HubAnswer(
        names.public_model, names.completion_id, names.created, usage_chunk=call.dialect is not Dialect.CHAT
    )
    wire = adapter_for(provider.kind).hub_request(provider, model, hub.body, call.stream, answer)
    notes = [*hub.notes, *wire.notes]
    translators: list[StreamTranslator] = []
    if call.stream and wire.stream_to_hub is not None:
        translators.append(wire.stream_to_hub)
    if call.stream and from_hub_stream is not None:
        translators.append(from_hub_stream())
    keeper = response_keeper(call)
    if keeper is not None and call.stream:
        translators.append(keeper)  # last: it sees the client's events

    def answer_json(data: dict[str, Any]) -> dict[str, Any]:
        answer = from_hub_json(wire.answer_to_hub(data))
        return answer if keeper is None else keeper.caught(answer)

    return Exchange(
        wire.request,
        wire.observer,
        wire.usage_from_json,
        answer_json,
        translators if call.stream else None,
        _SHAPES[call.dialect],
        notes,
        keeper,
    )


def _unsupported(call: ClientCall, target: RouteTarget) -> GatewayError:
    return GatewayError(
        400, "unsupported_endpoint", f"The provider of '{target.public_model}' does not offer {call.dialect.value}."
    )


def _wants_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


@dataclass(frozen=True)
class _Names:
    """Identifiers a translated answer carries (the upstream's own do not fit)."""

    public_model: str
    completion_id: str
    created: int
    created_at: str  # ISO 8601, for Ollama

    @classmethod
    def new(cls, target: RouteTarget) -> "_Names":
        return cls(
            public_model=target.public_model,  # the name the client asked for
            completion_id=uuid.uuid4().hex,
            created=int(time.time()),
            created_at=timezone.now().isoformat().replace("+00:00", "Z"),
        )


ToHub = Callable[..., Translated]
FromHubJson = Callable[[dict[str, Any]], dict[str, Any]]


def _client_side(call: ClientCall, names: _Names) -> tuple[ToHub, FromHubJson, Callable[[], StreamTranslator] | None]:
    """The client dialect's translators to and from the hub."""
    model, body = names.public_model, call.body
    started = time.perf_counter_ns()
    match call.dialect:
        case Dialect.CHAT:
            return (
                lambda body, upstream_model: Translated({**body, "model": upstream_model}),
                lambda data: {**data, "model": model},
                None,
            )
        case Dialect.MESSAGES:
            from proxy.translate import messages_to_chat

            message_id = "msg_" + names.completion_id
            estimate = messages_to_chat.count_tokens_estimate(body)
            return (
                messages_to_chat.messages_request_to_chat,
                lambda data: messages_to_chat.chat_response_to_message(data, model=model),
                lambda: messages_to_chat.ChatToMessagesStream(
                    model=model, message_id=message_id, input_tokens_estimate=estimate
                ),
            )
        case Dialect.RESPONSES:
            from proxy.translate import responses

            response_id = "resp_" + names.completion_id
            return (
                # With the stored conversation in place of previous_response_id.
                lambda body, upstream_model: responses.responses_request_to_chat(
                    conversation_body(call, native=False), upstream_model=upstream_model
                ),
                lambda data: responses.chat_response_to_responses(
                    data, model=model, response_id=response_id, created_at=names.created, request=body
                ),
                lambda: responses.ChatToResponsesStream(
                    model=model, response_id=response_id, created_at=names.created, request=body
                ),
            )
        case Dialect.COMPLETIONS:
            from proxy.translate import completions

            completion_id = "cmpl-" + names.completion_id
            return (
                completions.completions_request_to_chat,
                lambda data: completions.chat_response_to_completion(data, model=model),
                lambda: completions.ChatToCompletionsStream(
                    model=model, completion_id=completion_id, created=names.created, include_usage=_wants_usage(body)
                ),
            )
        case Dialect.OLLAMA_CHAT | Dialect.OLLAMA_GENERATE:
            from proxy.translate import ollama

            generate = call.dialect is Dialect.OLLAMA_GENERATE
            to_hub = ollama.ollama_generate_request_to_chat if generate else ollama.ollama_chat_request_to_chat
            from_json = ollama.chat_response_to_ollama_generate if generate else ollama.chat_response_to_ollama_chat
            return (
                to_hub,
                lambda data: from_json(
                    data, model=model, created_at=names.created_at, duration_ns=time.perf_counter_ns() - started
                ),
                lambda: ollama.ChatToOllamaStream(model=model, generate=generate, created_at=names.created_at),
            )
    raise AssertionError(f"no translation for {call.dialect}")
