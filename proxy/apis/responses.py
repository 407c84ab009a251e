"""OpenAI's Responses API: native where the provider has it, else through chat
with the gateway keeping the conversation (proxy.responses_state)."""

from typing import Any

from proxy import dialects
from proxy.apis.spec import ClientSide, DialectSpec, HubNames, StreamShape, sse_named
from proxy.dialects import ClientCall, Dialect
from proxy.responses_state import conversation_body


def _client_side(call: ClientCall, names: HubNames) -> ClientSide:
    from proxy.translate import responses

    model, body = names.public_model, call.body
    response_id = "resp_" + names.completion_id
    return ClientSide(
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


def _native_body(call: ClientCall) -> dict[str, Any]:
    return conversation_body(call, native=True)  # the stored conversation, for an id the gateway resolved


RESPONSES = DialectSpec(
    Dialect.RESPONSES,
    ("/v1/responses",),
    lambda raw, headers, query: dialects.responses_call(raw),
    stream=StreamShape(sse_named),
    client_side=_client_side,
    translated_when_missing=True,
    native_body=_native_body,
)
