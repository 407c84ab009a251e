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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.http.response import HttpResponseBase

from gateway.kernel.context import PriceSnapshot, RouteTarget, Usage
from gateway.kernel.errors import GatewayError, invalid_request
from proxy.apis.registry import spec_for
from proxy.apis.spec import CHAT_STREAM, SSE, HubNames, StreamShape
from proxy.dialects import ClientCall, Dialect
from proxy.presets import preset_for
from proxy.providers.base import HubAnswer, StreamObserver, UpstreamRequest
from proxy.providers.registry import adapter_for
from proxy.responses_state import ResponseKeeper, response_keeper

# The translators (proxy.translate's modules) are imported where a request
# needs one (each client API's `client_side`, proxy.apis): a process whose
# clients and upstreams speak the same API never loads them (0.7 MB of a
# server process's memory at start-up, measured).
from proxy.translate import StreamTranslator, TranslationError

log = logging.getLogger(__name__)

NOTES_HEADER = "x-gateway-translation-notes"
_NOTES_MAX = 2000  # header bytes; proxies reject huge headers
# A dialect an OpenAI-protocol provider may lack although its kind says it
# serves it (a server behind kind `openai` without /responses; its spec's
# `translated_when_missing`): a 404 there is answered by translating to chat
# completions instead. (provider name, base URL, dialect) whose native endpoint answered 404 and
# whose translation then answered: translated at once from then on. Per
# process, and reset by a restart or a new base URL: a provider that later
# gains the endpoint is used natively again then.
_NATIVE_MISSING: set[tuple[str, str, Dialect]] = set()


@dataclass
class Exchange:
    request: UpstreamRequest
    observer: StreamObserver | None  # reads usage from the upstream's own stream
    usage_from_json: Callable[[Any], Usage | None]
    # None: the upstream's answer passes through as it is
    answer_json: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    translators: list[StreamTranslator] | None = None
    shape: StreamShape = CHAT_STREAM
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
        not spec_for(call.dialect).translated_when_missing
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
    path = spec_for(call.dialect).paths[0].removeprefix("/v1")
    return f"translated: provider {target.provider.name} has no {path}, sent as chat completions"


def _native(call: ClientCall, target: RouteTarget) -> Exchange:
    provider, spec = target.provider, spec_for(call.dialect)
    body = call.body if spec.native_body is None else spec.native_body(call)
    native = adapter_for(provider.kind).native_request(call, provider, target.upstream_model, body)
    shape = spec.stream or CHAT_STREAM  # embeddings and count_tokens never stream
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
    provider, model, spec = target.provider, target.upstream_model, spec_for(call.dialect)
    if spec.client_side is None:  # embeddings; count_tokens is answered before routing
        raise _unsupported(call, target)
    names = HubNames.new(target)
    to_hub, from_hub_json, from_hub_stream = spec.client_side(call, names)
    hub = to_hub(call.body, upstream_model=model)
    answer = HubAnswer(names.public_model, names.completion_id, names.created, usage_chunk=spec.hub_usage_chunk)
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
        spec.stream or CHAT_STREAM,
        notes,
        keeper,
    )


def _unsupported(call: ClientCall, target: RouteTarget) -> GatewayError:
    return GatewayError(
        400, "unsupported_endpoint", f"The provider of '{target.public_model}' does not offer {call.dialect.value}."
    )
