"""OpenAI chat completions: the hub every other API translates through."""

from typing import Any

from proxy.apis.spec import CHAT_STREAM, ClientSide, DialectSpec, HubNames
from proxy.apis.texts import (
    ApiTexts,
    Piece,
    Slot,
    content,
    entries,
    finished_choices,
    items,
    messages,
    parts_of,
    string,
)
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


def _answer(body: dict[str, Any]) -> list[Slot]:
    return [
        slot
        for choice in items(body.get("choices"))
        if isinstance(choice, dict) and isinstance(choice.get("message"), dict)
        for slot in content(choice["message"])
    ]


def _stream(event: dict[str, Any]) -> list[Piece]:
    return [
        (choice.get("index", 0), slot)
        for choice in items(event.get("choices"))
        if isinstance(choice, dict) and isinstance(choice.get("delta"), dict)
        for slot in string(choice["delta"], "content")
    ]


_MEDIA = frozenset({"image_url", "input_audio", "file"})


def _media_parts(body: dict[str, Any]) -> int:
    return sum(parts_of(message, _MEDIA) for message in items(body.get("messages")))


TEXTS = ApiTexts(
    request=lambda body: list(messages(body)),
    answer=_answer,
    stream=_stream,
    stream_ends=finished_choices,
    turns=lambda body: entries(body, "messages"),
    media_parts=_media_parts,
)
CHAT = DialectSpec(
    Dialect.CHAT,
    ("/v1/chat/completions",),
    lambda raw, headers, query: chat_call(raw),
    texts=TEXTS,
    stream=CHAT_STREAM,
    cacheable=True,
    client_side=_client_side,
    hub_usage_chunk=False,
)
