"""OpenAI's Responses API: native where the provider has it, else through chat
with the gateway keeping the conversation (proxy.responses_state)."""

from typing import Any

from gateway.kernel.errors import invalid_request
from proxy.apis.spec import ClientSide, DialectSpec, HubNames, StreamShape, sse_named
from proxy.dialects import ClientCall, Dialect, json_object_with_model, positive_int, stream_flag
from proxy.responses_state import conversation_body


def responses_call(raw: bytes) -> ClientCall:
    body = json_object_with_model(raw, "response request")
    text = body.get("input")
    if not (isinstance(text, str) and text) and not (isinstance(text, list) and text):
        raise invalid_request("'input' is required: a string or a non-empty array of input items.", param="input")
    limit = positive_int(body, "max_output_tokens")
    return ClientCall(Dialect.RESPONSES, body, len(raw), stream_flag(body), limit)


def _client_side(call: ClientCall, names: HubNames) -> ClientSide:
    from proxy.translate.responses_to_chat.request import responses_request_to_chat
    from proxy.translate.responses_to_chat.response import chat_response_to_responses
    from proxy.translate.responses_to_chat.stream import ChatToResponsesStream

    model, body = names.public_model, call.body
    response_id = "resp_" + names.completion_id
    return ClientSide(
        # With the stored conversation in place of previous_response_id.
        lambda body, upstream_model: responses_request_to_chat(
            conversation_body(call, native=False), upstream_model=upstream_model
        ),
        lambda data: chat_response_to_responses(
            data, model=model, response_id=response_id, created_at=names.created, request=body
        ),
        lambda: ChatToResponsesStream(model=model, response_id=response_id, created_at=names.created, request=body),
    )


def _native_body(call: ClientCall) -> dict[str, Any]:
    return conversation_body(call, native=True)  # the stored conversation, for an id the gateway resolved


RESPONSES = DialectSpec(
    Dialect.RESPONSES,
    ("/v1/responses",),
    lambda raw, headers, query: responses_call(raw),
    stream=StreamShape(sse_named),
    client_side=_client_side,
    translated_when_missing=True,
    native_body=_native_body,
)
