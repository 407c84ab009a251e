"""OpenAI chat completions: the hub every other API translates through."""

from proxy import dialects
from proxy.apis.spec import CHAT_STREAM, ClientSide, DialectSpec, HubNames
from proxy.dialects import ClientCall, Dialect
from proxy.translate import Translated


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
    lambda raw, headers, query: dialects.chat_call(raw),
    stream=CHAT_STREAM,
    cacheable=True,
    client_side=_client_side,
    hub_usage_chunk=False,
)
