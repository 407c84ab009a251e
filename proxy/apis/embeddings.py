"""OpenAI embeddings: never streamed, never translated (a provider serves it or not), cached."""

from typing import Any

from gateway.kernel.errors import invalid_request
from proxy.apis.spec import DialectSpec
from proxy.apis.texts import ApiTexts, entries, strings
from proxy.dialects import ClientCall, Dialect, json_object_with_model


def embeddings_call(raw: bytes) -> ClientCall:
    body = json_object_with_model(raw, "embeddings request")
    text = body.get("input")
    if not (isinstance(text, str) and text) and not (isinstance(text, list) and text and _embeddable(text)):
        raise invalid_request(
            "'input' is required: a string, or a non-empty array of strings or tokens.", param="input"
        )
    return ClientCall(Dialect.EMBEDDINGS, body, len(raw), False, output_tokens=0)


def _token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _embeddable(items: list[Any]) -> bool:
    """Strings, token ids, or lists of token ids: one kind throughout, as
    OpenAI's API defines `input`."""
    return (
        all(isinstance(item, str) for item in items)
        or all(map(_token, items))
        or all(isinstance(item, list) and item and all(map(_token, item)) for item in items)
    )


EMBEDDINGS = DialectSpec(
    Dialect.EMBEDDINGS,
    ("/v1/embeddings",),
    lambda raw, headers, query: embeddings_call(raw),
    # Its input strings (token ids carry no text); each input is framed
    # like a message in the estimate.
    texts=ApiTexts(request=lambda body: list(strings(body, "input")), turns=lambda body: entries(body, "input")),
    cacheable=True,
)
