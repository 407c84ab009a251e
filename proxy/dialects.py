"""The APIs a client can call, and what the gateway checks before routing.

A dialect is the wire format of one client-facing operation. Its value is
the `endpoint` the ledger records; what else the gateway knows of it (its
paths, error envelope, stream shape, translators) is its module's in
proxy.apis, looked up with proxy.apis.registry.spec_for. Parsing checks only what routing,
budgets and translation need; everything else is the upstream's to judge.
"""

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.kernel.errors import GatewayError, invalid_request

MODEL_NAME_MAX = 200  # the ledger's column
# orjson reads 1024 levels of nesting but writes only 254: a deeper body
# would parse and then fail when forwarded.
JSON_DEPTH_MAX = 254


class Dialect(enum.StrEnum):
    CHAT = "chat.completions"
    EMBEDDINGS = "embeddings"
    COMPLETIONS = "completions"
    RESPONSES = "responses"
    MESSAGES = "messages"
    COUNT_TOKENS = "messages.count_tokens"
    OLLAMA_CHAT = "ollama.chat"
    OLLAMA_GENERATE = "ollama.generate"
    # The media endpoints (parsed in proxy.media).
    TRANSCRIPTIONS = "audio.transcriptions"
    TRANSLATIONS = "audio.translations"
    SPEECH = "audio.speech"
    IMAGES = "images.generations"
    IMAGE_EDITS = "images.edits"


@dataclass(frozen=True)
class ClientCall:
    """One parsed client request, in the client's own dialect."""

    dialect: Dialect
    body: dict[str, Any]
    size: int  # bytes: no prompt has more tokens, so the budget's worst case
    stream: bool
    # The most output tokens it can produce when the dialect says (None: the
    # model's limit applies).
    output_tokens: int | None = None
    # Headers a native upstream of the same API must see (anthropic-version,
    # anthropic-beta).
    headers: Mapping[str, str] = field(default_factory=dict)
    query: str = ""  # passed on to a native upstream (Claude Code's `?beta=true`)
    # A Responses call's earlier turns (its previous_response_id), as input
    # items, once the gateway's store found them (proxy.responses_state).
    history: tuple[dict[str, Any], ...] | None = None
    # A media endpoint's call (proxy.media.MediaCall): what its budget and
    # meter need, and a multipart body to re-send as it came.
    media: Any = None


def json_object_with_model(raw: bytes, what: str) -> dict[str, Any]:
    if not raw.strip():
        raise invalid_request(f"The request body is empty; expected a JSON {what}.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(400, "invalid_json", f"The request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object.")
    # Counting brackets (in C) settles almost every body; only one with many
    # is walked.
    if raw.count(b"[") + raw.count(b"{") > JSON_DEPTH_MAX and _depth(body) > JSON_DEPTH_MAX:
        raise GatewayError(400, "invalid_json", f"The request body is nested deeper than {JSON_DEPTH_MAX} levels.")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise invalid_request("'model' is required and must be a non-empty string.", param="model")
    if len(model) > MODEL_NAME_MAX or not model.isprintable():
        raise invalid_request(f"'model' must be at most {MODEL_NAME_MAX} printable characters.", param="model")
    return body


def _depth(value: Any) -> int:
    """The nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in item if isinstance(child, (dict, list)))
    return deepest


def _positive_int(body: dict[str, Any], name: str, *, required: bool = False) -> int | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise invalid_request(f"'{name}' must be a positive integer.", param=name)
    return value


def _stream_flag(body: dict[str, Any], *, default: bool = False) -> bool:
    stream = body.get("stream", default)
    if stream is None:
        return default
    if not isinstance(stream, bool):
        raise invalid_request("'stream' must be a boolean.", param="stream")
    return stream


def _non_empty_list(body: dict[str, Any], name: str) -> list[Any]:
    value = body.get(name)
    if not isinstance(value, list) or not value:
        raise invalid_request(f"'{name}' is required and must be a non-empty array.", param=name)
    return value


def _objects(body: dict[str, Any], name: str) -> None:
    if not all(isinstance(item, dict) for item in _non_empty_list(body, name)):
        raise invalid_request(f"Every item of '{name}' must be an object.", param=name)


def chat_call(raw: bytes) -> ClientCall:
    body = json_object_with_model(raw, "chat completion request")
    _objects(body, "messages")
    stream = _stream_flag(body)
    for name in ("max_completion_tokens", "max_tokens", "n"):
        _positive_int(body, name)
    # output_tokens None: the budget reads max_tokens times n, or the model's
    # limit (usage.output_limit).
    return ClientCall(Dialect.CHAT, body, len(raw), stream)


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


def completions_call(raw: bytes) -> ClientCall:
    body = json_object_with_model(raw, "completion request")
    prompt = body.get("prompt")
    if not isinstance(prompt, (str, list)):
        raise invalid_request("'prompt' is required: a string or an array.", param="prompt")
    limit = _positive_int(body, "max_tokens")
    # The legacy API's default is 16 tokens; n and best_of multiply it.
    choices = max(
        (v for v in (body.get("n"), body.get("best_of")) if isinstance(v, int) and not isinstance(v, bool)), default=1
    )
    return ClientCall(Dialect.COMPLETIONS, body, len(raw), _stream_flag(body), (limit or 16) * max(choices, 1))


def responses_call(raw: bytes) -> ClientCall:
    body = json_object_with_model(raw, "response request")
    text = body.get("input")
    if not (isinstance(text, str) and text) and not (isinstance(text, list) and text):
        raise invalid_request("'input' is required: a string or a non-empty array of input items.", param="input")
    limit = _positive_int(body, "max_output_tokens")
    return ClientCall(Dialect.RESPONSES, body, len(raw), _stream_flag(body), limit)


_ANTHROPIC_HEADERS = ("anthropic-version", "anthropic-beta")


def messages_call(raw: bytes, headers: Mapping[str, str], query: str = "") -> ClientCall:
    body = json_object_with_model(raw, "message request")
    _objects(body, "messages")
    limit = _positive_int(body, "max_tokens", required=True)
    passed = {name: headers[name] for name in _ANTHROPIC_HEADERS if headers.get(name)}
    return ClientCall(Dialect.MESSAGES, body, len(raw), _stream_flag(body), limit, passed, query)


def count_tokens_call(raw: bytes, headers: Mapping[str, str]) -> ClientCall:
    body = json_object_with_model(raw, "token count request")
    _objects(body, "messages")
    passed = {name: headers[name] for name in _ANTHROPIC_HEADERS if headers.get(name)}
    return ClientCall(Dialect.COUNT_TOKENS, body, len(raw), False, 0, passed)


def _ollama_limit(body: dict[str, Any]) -> int | None:
    options = body.get("options")
    if options is not None and not isinstance(options, dict):
        raise invalid_request("'options' must be an object.", param="options")
    value = (options or {}).get("num_predict")
    # Ollama's -1 and -2 mean "until the model stops" / "fill the context".
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def ollama_chat_call(raw: bytes) -> ClientCall:
    body = json_object_with_model(raw, "chat request")
    _objects(body, "messages")
    return ClientCall(Dialect.OLLAMA_CHAT, body, len(raw), _stream_flag(body, default=True), _ollama_limit(body))


def ollama_generate_call(raw: bytes) -> ClientCall:
    body = json_object_with_model(raw, "generate request")
    if not isinstance(body.get("prompt", ""), str):
        raise invalid_request("'prompt' must be a string.", param="prompt")
    return ClientCall(Dialect.OLLAMA_GENERATE, body, len(raw), _stream_flag(body, default=True), _ollama_limit(body))
