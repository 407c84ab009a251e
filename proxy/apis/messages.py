"""Anthropic's Messages API and its token counter: errors in Anthropic's envelope."""

from collections.abc import Mapping

from gateway.kernel.errors import ApiFormat
from proxy.apis.spec import ClientSide, DialectSpec, HubNames, StreamShape, sse_named
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


MESSAGES = DialectSpec(
    Dialect.MESSAGES,
    ("/v1/messages",),
    lambda raw, headers, query: messages_call(raw, headers, query),
    error_format=ApiFormat.ANTHROPIC,
    stream=StreamShape(sse_named),
    client_side=_client_side,
)
# Counted by Anthropic upstreams, estimated before routing for the others (proxy.pipeline).
COUNT_TOKENS = DialectSpec(
    Dialect.COUNT_TOKENS,
    ("/v1/messages/count_tokens",),
    lambda raw, headers, query: count_tokens_call(raw, headers),
    error_format=ApiFormat.ANTHROPIC,
)
