"""The APIs a client can call, and what the gateway checks before routing.

A dialect is the wire format of one client-facing operation. Its value is
the `endpoint` the ledger records; what else the gateway knows of it (its
parser, paths, error envelope, stream shape, translators) is its module's
in proxy.apis, looked up with proxy.apis.registry.spec_for. Here is what
every parser shares. Parsing checks only what routing, budgets and
translation need; everything else is the upstream's to judge.
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


def positive_int(body: dict[str, Any], name: str, *, required: bool = False) -> int | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise invalid_request(f"'{name}' must be a positive integer.", param=name)
    return value


def stream_flag(body: dict[str, Any], *, default: bool = False) -> bool:
    stream = body.get("stream", default)
    if stream is None:
        return default
    if not isinstance(stream, bool):
        raise invalid_request("'stream' must be a boolean.", param="stream")
    return stream


def non_empty_list(body: dict[str, Any], name: str) -> list[Any]:
    value = body.get(name)
    if not isinstance(value, list) or not value:
        raise invalid_request(f"'{name}' is required and must be a non-empty array.", param=name)
    return value


def objects(body: dict[str, Any], name: str) -> None:
    if not all(isinstance(item, dict) for item in non_empty_list(body, name)):
        raise invalid_request(f"Every item of '{name}' must be an object.", param=name)
