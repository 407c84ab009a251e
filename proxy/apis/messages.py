"""Anthropic's Messages API and its token counter: errors in Anthropic's envelope."""

import dataclasses
from collections.abc import Hashable, Iterator, Mapping
from typing import Any

from gateway.kernel.errors import ApiFormat
from proxy.apis.spec import ClientSide, DialectSpec, HubNames, StreamShape, sse_named
from proxy.apis.texts import ALL, ApiTexts, Piece, Slot, entries, items, messages, parts_of, string
from proxy.dialects import ClientCall, Dialect, json_object_with_model, objects, positive_int, stream_flag

_ANTHROPIC_HEADERS = ("anthropic-version", "anthropic-beta")


def messages_call(raw: bytes, headers: Mapping[str, str], query: str = "") -> ClientCall:
    body = json_object_with_model(raw, "message request")
    objects(body, "messages")
    limit = positive_int(body, "max_tokens", required=True)
    passed = {name: headers[name] for name in _ANTHROPIC_HEADERS if headers.get(name)}
    return ClientCall(Dialect.MESSAGES, body, len(raw), stream_flag(body), limit, passed, query)


def count_tokens_call(raw: bytes, headers: Mapping[str, str]) -> ClientCall:
    body = json_object_with_model(raw, "token count request")
    objects(body, "messages")
    passed = {name: headers[name] for name in _ANTHROPIC_HEADERS if headers.get(name)}
    return ClientCall(Dialect.COUNT_TOKENS, body, len(raw), False, 0, passed)


def _client_side(call: ClientCall, names: HubNames) -> ClientSide:
    from proxy.translate.count_tokens import count_tokens_estimate
    from proxy.translate.messages_to_chat.request import messages_request_to_chat
    from proxy.translate.messages_to_chat.response import chat_response_to_message
    from proxy.translate.messages_to_chat.stream import ChatToMessagesStream

    model = names.public_model
    message_id = "msg_" + names.completion_id
    estimate = count_tokens_estimate(call.body)
    return ClientSide(
        messages_request_to_chat,
        lambda data: chat_response_to_message(data, model=model),
        lambda: ChatToMessagesStream(model=model, message_id=message_id, input_tokens_estimate=estimate),
    )


def _system(body: dict[str, Any]) -> Iterator[Slot]:
    system = body.get("system")
    if isinstance(system, str):
        yield body, "system"
    for block in items(system):
        if isinstance(block, dict):
            yield from string(block, "text")


def _request(body: dict[str, Any]) -> list[Slot]:
    return [*_system(body), *messages(body)]


def _answer(body: dict[str, Any]) -> list[Slot]:
    return [slot for block in items(body.get("content")) for slot in string(block, "text")]


def _stream(event: dict[str, Any]) -> list[Piece]:
    delta = event.get("delta")
    if event.get("type") == "content_block_delta" and isinstance(delta, dict) and delta.get("type") == "text_delta":
        return [(event.get("index", 0), slot) for slot in string(delta, "text")]
    return []


def _stream_ends(event: dict[str, Any]) -> list[Hashable] | str:
    kind = event.get("type")
    if kind == "content_block_stop":
        return [event.get("index", 0)]
    return ALL if kind in ("message_delta", "message_stop") else []


_MEDIA = frozenset({"image", "document"})


def _media_parts(body: dict[str, Any]) -> int:
    """Image and document blocks, also those a tool result carries."""
    count = 0
    for message in items(body.get("messages")):
        count += parts_of(message, _MEDIA)
        for block in items(message.get("content")) if isinstance(message, dict) else ():
            if isinstance(block, dict) and block.get("type") == "tool_result":
                count += parts_of(block, _MEDIA)
    return count


# A token count's request is a message request's; its answer is a count, no text.
_REQUEST_TEXTS = ApiTexts(request=_request, turns=lambda body: entries(body, "messages"), media_parts=_media_parts)
MESSAGES = DialectSpec(
    Dialect.MESSAGES,
    ("/v1/messages",),
    lambda raw, headers, query: messages_call(raw, headers, query),
    texts=dataclasses.replace(_REQUEST_TEXTS, answer=_answer, stream=_stream, stream_ends=_stream_ends),
    error_format=ApiFormat.ANTHROPIC,
    stream=StreamShape(sse_named),
    client_side=_client_side,
)
# Counted by Anthropic upstreams, estimated before routing for the others (proxy.pipeline).
COUNT_TOKENS = DialectSpec(
    Dialect.COUNT_TOKENS,
    ("/v1/messages/count_tokens",),
    lambda raw, headers, query: count_tokens_call(raw, headers),
    texts=_REQUEST_TEXTS,
    error_format=ApiFormat.ANTHROPIC,
)
