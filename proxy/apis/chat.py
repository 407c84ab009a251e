"""OpenAI chat completions: the hub every other API translates through."""

from proxy.apis.spec import CHAT_STREAM, ClientSide, DialectSpec, HubNames
from proxy.dialects import ClientCall, Dialect, json_object_with_model, objects, positive_int, stream_flag
from proxy.translate import Translated


def chat_call(raw: bytes) -> ClientCall:
    body = json_object_with_model(raw, "chat completion request")
    objects(body, "messages")
    stream = stream_flag(body)
    for name in ("max_completion_tokens", "max_tokens", "n"):
        positive_int(body, name)
    # output_tokens None: the budget reads max_tokens times n, or the model's
    # limit (usage.output_limit).
    return ClientCall(Dialect.CHAT, body, len(raw), stream)


def _client_side(call: ClientCall, names: HubNames) -> ClientSide:
    model = names.public_model
    return ClientSide(
        lambda body, upstream_model: Translated({**body, "model": upstream_model}),
        lambda data: {**data, "model": model},
        None,
    )


CHAT = DialectSpec(
    Dialect.CHAT,
    ("/v1/chat/completions",),
    lambda raw, headers, query: chat_call(raw),
    stream=CHAT_STREAM,
    cacheable=True,
    client_side=_client_side,
    hub_usage_chunk=False,
)
