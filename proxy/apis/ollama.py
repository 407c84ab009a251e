"""Ollama's chat and generate, for local tools: NDJSON streams, `{"error": ...}` errors.

Ollama's other routes (/api/tags, /api/embed, ...) are proxy.compat's; every
/api/ path answers errors in Ollama's envelope.
"""

import time
from collections.abc import Hashable
from typing import Any

from gateway.kernel.errors import ApiFormat, invalid_request
from proxy.apis.spec import NDJSON, ClientSide, DialectSpec, HubNames, StreamShape, ndjson
from proxy.apis.texts import ALL, ApiTexts, Slot, entries, items, messages, string
from proxy.dialects import ClientCall, Dialect, json_object_with_model, objects, stream_flag

OLLAMA_PREFIX = "/api/"
_STREAM = StreamShape(ndjson, content_type=NDJSON)


def _ollama_limit(body: dict[str, Any]) -> int | None:
    options = body.get("options")
    if options is not None and not isinstance(options, dict):
        raise invalid_request("'options' must be an object.", param="options")
    value = (options or {}).get("num_predict")
    # Ollama's -1 and -2 mean "until the model stops" / "fill the context".
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def ollama_chat_call(raw: bytes) -> ClientCall:
    body = json_object_with_model(raw, "chat request")
    objects(body, "messages")
    return ClientCall(Dialect.OLLAMA_CHAT, body, len(raw), stream_flag(body, default=True), _ollama_limit(body))


def ollama_generate_call(raw: bytes) -> ClientCall:
    body = json_object_with_model(raw, "generate request")
    if not isinstance(body.get("prompt", ""), str):
        raise invalid_request("'prompt' must be a string.", param="prompt")
    return ClientCall(Dialect.OLLAMA_GENERATE, body, len(raw), stream_flag(body, default=True), _ollama_limit(body))


def _client_side(call: ClientCall, names: HubNames) -> ClientSide:
    from proxy.translate.ollama_to_chat.request import ollama_chat_request_to_chat, ollama_generate_request_to_chat
    from proxy.translate.ollama_to_chat.response import chat_response_to_ollama_chat, chat_response_to_ollama_generate
    from proxy.translate.ollama_to_chat.stream import ChatToOllamaStream

    model, started = names.public_model, time.perf_counter_ns()
    generate = call.dialect is Dialect.OLLAMA_GENERATE
    to_hub = ollama_generate_request_to_chat if generate else ollama_chat_request_to_chat
    from_json = chat_response_to_ollama_generate if generate else chat_response_to_ollama_chat
    return ClientSide(
        to_hub,
        lambda data: from_json(
            data, model=model, created_at=names.created_at, duration_ns=time.perf_counter_ns() - started
        ),
        lambda: ChatToOllamaStream(model=model, generate=generate, created_at=names.created_at),
    )


def _message_text(body: dict[str, Any]) -> list[Slot]:
    message = body.get("message")
    return list(string(message, "content")) if isinstance(message, dict) else []


def _ends(event: dict[str, Any]) -> list[Hashable] | str:
    return ALL if event.get("done") else []


def _images(holder: Any) -> int:
    return len(items(holder.get("images"))) if isinstance(holder, dict) else 0


# One channel of text per stream: Ollama answers with one choice.
CHAT_TEXTS = ApiTexts(
    request=lambda body: list(messages(body)),
    answer=_message_text,
    stream=lambda event: [(0, slot) for slot in _message_text(event)],
    stream_ends=_ends,
    turns=lambda body: entries(body, "messages"),
    media_parts=lambda body: sum(map(_images, items(body.get("messages")))),
)
GENERATE_TEXTS = ApiTexts(
    request=lambda body: [*string(body, "system"), *string(body, "prompt")],
    answer=lambda body: list(string(body, "response")),
    stream=lambda event: [(0, slot) for slot in string(event, "response")],
    stream_ends=_ends,
    media_parts=_images,
)
OLLAMA_CHAT = DialectSpec(
    Dialect.OLLAMA_CHAT,
    ("/api/chat",),
    lambda raw, headers, query: ollama_chat_call(raw),
    texts=CHAT_TEXTS,
    error_format=ApiFormat.OLLAMA,
    stream=_STREAM,
    client_side=_client_side,
    provider_in_path=False,
)
OLLAMA_GENERATE = DialectSpec(
    Dialect.OLLAMA_GENERATE,
    ("/api/generate",),
    lambda raw, headers, query: ollama_generate_call(raw),
    texts=GENERATE_TEXTS,
    error_format=ApiFormat.OLLAMA,
    stream=_STREAM,
    client_side=_client_side,
    provider_in_path=False,
)
