"""The names and values OpenTelemetry's GenAI semantic conventions give a
request's spans (proxy.telemetry_spans): the operation, the provider's
well-known name, token counts as the conventions count them, a cost as an
exact decimal, and an answer's id, model and finish reasons read in any of
the client APIs' shapes. Pure: nothing of OpenTelemetry is imported here.
"""

import functools
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import orjson

from gateway.kernel.context import Usage

OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_ID = "gen_ai.response.id"
FINISH_REASONS = "gen_ai.response.finish_reasons"
ERROR_TYPE = "error.type"

# Before the body is parsed the path says the operation (a refusal then is
# still named); the dialect says it once parsed.
OPERATION_BY_PATH = (
    ("/chat/completions", "chat"),
    ("/messages/count_tokens", "count_tokens"),
    ("/messages", "chat"),
    ("/responses", "chat"),
    ("/completions", "text_completion"),
    ("/embeddings", "embeddings"),
    ("/api/chat", "chat"),
    ("/api/generate", "text_completion"),
    ("/api/embed", "embeddings"),
)
OPERATION_BY_DIALECT = {
    "chat.completions": "chat",
    "messages": "chat",
    "responses": "chat",
    "ollama.chat": "chat",
    "completions": "text_completion",
    "ollama.generate": "text_completion",
    "embeddings": "embeddings",
    "messages.count_tokens": "count_tokens",
}
# Provider kinds (proxy.presets) under their well-known gen_ai.provider.name;
# any other kind is named as it is.
_PROVIDER_NAMES = {
    "azure": "azure.ai.openai",
    "gemini": "gcp.gemini",
    "mistral": "mistral_ai",
}


def provider_name(kind: str) -> str:
    return _PROVIDER_NAMES.get(kind, kind)


@functools.lru_cache(maxsize=256)
def server_attributes(base_url: str) -> dict[str, Any]:
    """server.address and server.port of a provider's base URL."""
    parts = urlsplit(base_url)
    found: dict[str, Any] = {"server.address": parts.hostname or ""}
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return found
    found["server.port"] = port
    return found


def usage_attributes(usage: Usage) -> dict[str, int]:
    """Token counts as the conventions count them: input includes cache reads
    and writes, output includes reasoning (the ledger's buckets are disjoint)."""
    found = {
        "gen_ai.usage.input_tokens": usage.prompt_tokens,
        "gen_ai.usage.output_tokens": usage.output_tokens + usage.reasoning_tokens,
    }
    written = usage.cache_write_5m_tokens + usage.cache_write_1h_tokens
    for name, value in (
        ("gen_ai.usage.cache_read.input_tokens", usage.cached_input_tokens),
        ("gen_ai.usage.cache_creation.input_tokens", written),
        ("gen_ai.usage.reasoning.output_tokens", usage.reasoning_tokens),
    ):
        if value:
            found[name] = value
    return found


def usd(nanos: int) -> str:
    """Nano-dollars as an exact decimal string: 2400 -> "0.0000024"."""
    text = format(Decimal(nanos).scaleb(-9), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def envelope_error_code(body: bytes) -> str:
    """The stable code in an error envelope (OpenAI's and Ollama's carry it;
    Anthropic's only a type)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(data, dict):
        return ""
    error = data.get("error")
    if isinstance(error, dict):
        code = error.get("code") or error.get("type")
        return code if isinstance(code, str) else ""
    code = data.get("code")
    return code if isinstance(code, str) else ""


class AnswerFacts:
    """An answer's id, model and finish reasons, in any of the client APIs'
    shapes: chat and completions (`choices[].finish_reason`), Responses
    (`response.status`), Anthropic (`stop_reason`, `message_start`), Ollama
    (`done_reason`)."""

    __slots__ = ("id", "model", "reasons")

    def __init__(self) -> None:
        self.id = ""
        self.model = ""
        self.reasons: list[str] = []

    def read_json(self, raw: bytes) -> None:
        try:
            self.read(orjson.loads(raw))
        except orjson.JSONDecodeError:
            pass

    def read_chunk(self, chunk: bytes) -> None:
        for data in _chunk_events(chunk):
            self.read(data)

    def read(self, data: Any) -> None:
        if not isinstance(data, dict):
            return
        for key in ("response", "message"):  # Responses events, Anthropic's message_start
            inner = data.get(key)
            if isinstance(inner, dict) and ("id" in inner or "model" in inner):
                self.read(inner)
        if not self.id and isinstance(data.get("id"), str):
            self.id = data["id"]
        if not self.model and isinstance(data.get("model"), str):
            self.model = data["model"]
        choices = data.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if isinstance(choice, dict) and isinstance(choice.get("finish_reason"), str):
                self.reasons.append(choice["finish_reason"])
        delta = data.get("delta")
        for holder in (data, delta if isinstance(delta, dict) else {}):
            if isinstance(holder.get("stop_reason"), str):
                self.reasons.append(holder["stop_reason"])
        if isinstance(data.get("done_reason"), str):
            self.reasons.append(data["done_reason"])
        if data.get("object") == "response" and data.get("status") not in (None, "queued", "in_progress"):
            incomplete = data.get("incomplete_details")
            reason = incomplete.get("reason") if isinstance(incomplete, dict) else data.get("status")
            if isinstance(reason, str):
                self.reasons.append(reason)

    def apply(self, span: Any) -> None:
        if not span.is_recording():
            return
        if self.id:
            span.set_attribute(RESPONSE_ID, self.id)
        if self.model:
            span.set_attribute(RESPONSE_MODEL, self.model)
        if self.reasons:
            span.set_attribute(FINISH_REASONS, tuple(self.reasons))


def _chunk_events(chunk: bytes) -> Iterator[Any]:
    """The JSON payloads of a chunk of server-sent events or JSON lines."""
    for line in chunk.split(b"\n"):
        line = line.strip()
        if line.startswith(b"data:"):
            line = line[5:].strip()
        if line.startswith(b"{"):
            try:
                yield orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
