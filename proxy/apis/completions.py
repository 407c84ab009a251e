"""OpenAI's legacy completions: native where the provider still serves it, else through chat."""

from typing import Any

from proxy import dialects
from proxy.apis.spec import CHAT_STREAM, ClientSide, DialectSpec, HubNames
from proxy.dialects import ClientCall, Dialect


def _wants_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _client_side(call: ClientCall, names: HubNames) -> ClientSide:
    from proxy.translate import completions

    model, body = names.public_model, call.body
    completion_id = "cmpl-" + names.completion_id
    return ClientSide(
        completions.completions_request_to_chat,
        lambda data: completions.chat_response_to_completion(data, model=model),
        lambda: completions.ChatToCompletionsStream(
            model=model, completion_id=completion_id, created=names.created, include_usage=_wants_usage(body)
        ),
    )


COMPLETIONS = DialectSpec(
    Dialect.COMPLETIONS,
    ("/v1/completions",),
    lambda raw, headers, query: dialects.completions_call(raw),
    stream=CHAT_STREAM,
    client_side=_client_side,
    translated_when_missing=True,
)
