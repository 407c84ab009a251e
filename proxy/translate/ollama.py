"""Ollama's API (`/api/chat`, `/api/generate`, `/api/tags`, `/api/show`,
`/api/ps`) served from any upstream through chat completions, and
`/api/embed` and `/api/embeddings` through OpenAI's embeddings, so Ollama
clients (Open WebUI, LangChain's ChatOllama, the `ollama` package) can use
every model the gateway routes.

Ollama's differences that matter here: streaming is on unless the request
says `"stream": false`; a stream is NDJSON whose last object has `done: true`
and the counts; tool calls carry their arguments as an object, have no id,
and arrive whole, never in pieces; tool results name the tool instead of the
call; images are bare base64 strings; an error mid-stream is an object with
an `error` field, which the `ollama` client raises as ResponseError.

Ollama reports durations in nanoseconds. A remote upstream does not say how
its time split between reading the prompt and writing the answer, so all of
it is reported as eval_duration (that is what tokens-per-second displays
divide by) and load and prompt durations are 0.
"""

import hashlib
import time
from collections.abc import Callable
from typing import Any

import orjson

from proxy.providers.base import token_count
from proxy.translate import Translated, TranslationError

# Ollama option -> chat field. Everything else in options is dropped with a note.
_OPTIONS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "num_predict": "max_tokens",
    "stop": "stop",
    "seed": "seed",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}
_THINK_LEVELS = ("low", "medium", "high")
_GENERATE_FIELDS = ("model", "prompt", "system", "images", "raw", "template", "context", "suffix")
# Base64 of each format's magic bytes: Ollama sends images without a MIME type.
_IMAGE_PREFIXES = (
    ("iVBORw0KGgo", "image/png"),
    ("R0lGOD", "image/gif"),
    ("UklGR", "image/webp"),
    ("/9j/", "image/jpeg"),
)


def ollama_chat_request_to_chat(body: dict[str, Any], *, upstream_model: str) -> Translated:
    notes: list[str] = []
    out: dict[str, Any] = {"model": upstream_model, "messages": _messages(body.get("messages"), notes)}
    if body.get("tools"):
        if not isinstance(body["tools"], list):
            raise TranslationError("tools must be a list.", param="tools")
        out["tools"] = body["tools"]  # Ollama took OpenAI's tool format as is
    _common_fields(body, out, notes, handled=("model", "messages", "tools"))
    return Translated(body=out, notes=notes)


def ollama_generate_request_to_chat(body: dict[str, Any], *, upstream_model: str) -> Translated:
    notes: list[str] = []
    prompt = body.get("prompt") or ""
    if not isinstance(prompt, str):
        raise TranslationError("prompt must be a string.", param="prompt")
    messages = [{"role": "system", "content": body["system"]}] if body.get("system") else []
    messages.append({"role": "user", "content": _content(prompt, body.get("images"), "images")})
    out: dict[str, Any] = {"model": upstream_model, "messages": messages}
    for key in ("raw", "template", "context", "suffix"):
        if body.get(key):
            notes.append(f"dropped: {key}")
    _common_fields(body, out, notes, handled=_GENERATE_FIELDS)
    return Translated(body=out, notes=notes)


def _common_fields(body: dict[str, Any], out: dict[str, Any], notes: list[str], *, handled: tuple[str, ...]) -> None:
    if body.get("stream", True) is not False:  # Ollama streams unless told not to
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    for key, value in body.items():
        if key in handled or key == "stream" or value is None:
            continue
        if key == "format":
            _format(value, out)
        elif key == "options":
            _options(value, out, notes)
        elif key == "think":
            _think(value, out, notes)
        else:
            notes.append(f"dropped: {key}")


def _format(value: Any, out: dict[str, Any]) -> None:
    if value == "json":
        out["response_format"] = {"type": "json_object"}
    elif isinstance(value, dict):
        out["response_format"] = {"type": "json_schema", "json_schema": {"name": "response", "schema": value}}
    elif value != "":
        raise TranslationError('format must be "json" or a JSON schema.', param="format")


def _options(value: Any, out: dict[str, Any], notes: list[str]) -> None:
    if not isinstance(value, dict):
        raise TranslationError("options must be an object.", param="options")
    for key, option in value.items():
        if option is None:
            continue
        if key == "num_predict" and isinstance(option, int) and option < 0:
            continue  # -1 (no limit) and -2 (fill the context) are the chat default: no max_tokens
        if key in _OPTIONS:
            out[_OPTIONS[key]] = option
        else:
            notes.append(f"dropped: options.{key}")


def _think(value: Any, out: dict[str, Any], notes: list[str]) -> None:
    if value is True:
        out["reasoning_effort"] = "medium"
        notes.append("mapped: think -> reasoning_effort=medium")
    elif value in _THINK_LEVELS:
        out["reasoning_effort"] = value
    elif value is False:
        notes.append("dropped: think=false")
    else:
        raise TranslationError("think must be true, false, low, medium or high.", param="think")


# --- messages ------------------------------------------------------------


def _messages(value: Any, notes: list[str]) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise TranslationError("messages must be a list.", param="messages")
    messages: list[dict[str, Any]] = []
    pending: list[tuple[str, str]] = []  # (call id, tool name) not yet answered
    for i, message in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise TranslationError(f"{where} must be an object.", param=where)
        role = message.get("role")
        content = message.get("content") or ""
        if not isinstance(content, str):
            raise TranslationError(f"{where}.content must be a string.", param=f"{where}.content")
        if role == "tool":
            messages.append(_tool_result(message, content, pending, where))
        elif role in ("system", "user", "assistant"):
            if message.get("thinking"):
                _note(notes, "dropped: message thinking")
            converted = {"role": role, "content": _content(content, message.get("images"), f"{where}.images")}
            if role == "assistant" and message.get("tool_calls"):
                converted["tool_calls"] = _tool_calls(message["tool_calls"], len(messages), where)
                pending = [(call["id"], call["function"]["name"]) for call in converted["tool_calls"]]
            messages.append(converted)
        else:
            raise TranslationError(f"{where}.role must be system, user, assistant or tool.", param=f"{where}.role")
    return messages


def _note(notes: list[str], note: str) -> None:
    if note not in notes:
        notes.append(note)


def _content(text: str, images: Any, where: str) -> str | list[dict[str, Any]]:
    if not images:
        return text
    if not isinstance(images, list) or not all(isinstance(image, str) for image in images):
        raise TranslationError(f"{where} must be a list of base64 strings.", param=where)
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    parts += [{"type": "image_url", "image_url": {"url": _data_url(image)}} for image in images]
    return parts


def _data_url(image: str) -> str:
    if image.startswith("data:"):
        return image
    mime = next((mime for prefix, mime in _IMAGE_PREFIXES if image.startswith(prefix)), "image/jpeg")
    return f"data:{mime};base64,{image}"


def _tool_calls(calls: Any, message_index: int, where: str) -> list[dict[str, Any]]:
    if not isinstance(calls, list):
        raise TranslationError(f"{where}.tool_calls must be a list.", param=f"{where}.tool_calls")
    converted = []
    for j, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise TranslationError("tool calls need a function name.", param=f"{where}.tool_calls[{j}]")
        arguments = function.get("arguments") or {}
        if not isinstance(arguments, str):
            arguments = orjson.dumps(arguments).decode()
        # Ollama's calls have no ids; chat needs them to pair results with calls.
        call_id = call.get("id") or f"call_{message_index}_{j}"
        converted.append(
            {"id": call_id, "type": "function", "function": {"name": function["name"], "arguments": arguments}}
        )
    return converted


def _tool_result(message: dict[str, Any], content: str, pending: list[tuple[str, str]], where: str) -> dict[str, Any]:
    """Pairs a result with its call: by id when the client sent one, else by tool name, else in order."""
    wanted_id, name = message.get("tool_call_id"), message.get("tool_name")
    match = next((entry for entry in pending if entry[0] == wanted_id), None)
    match = match or next((entry for entry in pending if name and entry[1] == name), None)
    match = match or (pending[0] if pending else None)
    if match is None:
        raise TranslationError(f"{where} answers no tool call of the assistant message before it.", param=where)
    pending.remove(match)
    return {"role": "tool", "tool_call_id": match[0], "content": content}


# --- answers -------------------------------------------------------------


def chat_response_to_ollama_chat(
    data: dict[str, Any], *, model: str, created_at: str, duration_ns: int
) -> dict[str, Any]:
    choice, message = _first_choice(data)
    out_message: dict[str, Any] = {"role": "assistant", "content": _text(message.get("content"))}
    thinking = _reasoning(message)
    if thinking:
        out_message["thinking"] = thinking
    calls = [_ollama_tool_call(call) for call in message.get("tool_calls") or [] if isinstance(call, dict)]
    if calls:
        out_message["tool_calls"] = calls
    head = {"model": model, "created_at": created_at, "message": out_message}
    return {**head, **_final(choice.get("finish_reason"), data.get("usage"), duration_ns)}


def chat_response_to_ollama_generate(
    data: dict[str, Any], *, model: str, created_at: str, duration_ns: int
) -> dict[str, Any]:
    choice, message = _first_choice(data)
    out: dict[str, Any] = {"model": model, "created_at": created_at, "response": _text(message.get("content"))}
    thinking = _reasoning(message)
    if thinking:
        out["thinking"] = thinking
    return {**out, **_final(choice.get("finish_reason"), data.get("usage"), duration_ns), "context": []}


def _first_choice(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    choices = data.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = choice.get("message")
    return choice, message if isinstance(message, dict) else {}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _reasoning(message: dict[str, Any]) -> str:
    # vLLM and DeepSeek say reasoning_content; OpenRouter says reasoning.
    for key in ("reasoning_content", "reasoning"):
        if isinstance(message.get(key), str) and message[key]:
            return str(message[key])
    return ""


def _object(value: Any) -> dict[str, Any]:
    """A JSON object, or an empty one for anything else."""
    return value if isinstance(value, dict) else {}


def _ollama_tool_call(call: dict[str, Any]) -> dict[str, Any]:
    function = _object(call.get("function"))
    return {"function": {"name": _text(function.get("name")), "arguments": _arguments(function.get("arguments"))}}


def _arguments(raw: Any) -> dict[str, Any]:
    """Ollama clients require an object. A model's malformed JSON is kept
    under "arguments" rather than lost, so the tool call still shows it."""
    if not isinstance(raw, str) or not raw.strip():
        return {}
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"arguments": raw}
    return parsed if isinstance(parsed, dict) else {"arguments": parsed}


def _final(finish_reason: Any, usage: Any, duration_ns: int) -> dict[str, Any]:
    usage = usage if isinstance(usage, dict) else {}
    return {
        "done": True,
        "done_reason": "length" if finish_reason == "length" else "stop",
        "total_duration": duration_ns,
        "load_duration": 0,
        "prompt_eval_count": token_count(usage.get("prompt_tokens")),
        "prompt_eval_duration": 0,
        "eval_count": token_count(usage.get("completion_tokens")),
        "eval_duration": duration_ns,
    }


# --- stream --------------------------------------------------------------


class ChatToOllamaStream:
    """chat.completion.chunk dicts in, Ollama NDJSON objects out.

    Each text or thinking delta becomes one `done: false` object. Tool calls
    are collected and sent whole in one object when the finish arrives, as
    Ollama does. The final `done: true` object with the counts waits for the
    usage chunk (which follows the finish) or for close(). A stream that
    breaks off before its finish ends with an `{"error": ...}` object, which
    Ollama clients raise, instead of a `done: true` that would claim the
    answer is whole. `clock` (monotonic nanoseconds) times the stream for
    the durations; tests pass a fake.
    """

    def __init__(
        self, *, model: str, generate: bool, created_at: str, clock: Callable[[], int] = time.monotonic_ns
    ) -> None:
        self._model = model
        self._generate = generate
        self._created_at = created_at
        self._clock = clock
        self._started_ns = clock()
        self._calls: dict[int, dict[str, str]] = {}
        self._finish_reason: str | None = None
        self._usage: dict[str, Any] | None = None
        self._ended = False

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        if self._ended:
            return []
        if isinstance(event.get("error"), dict):
            self._ended = True
            return [{"error": str(event["error"].get("message") or "The upstream reported an error.")}]
        out = []
        for choice in event.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # Ollama has no n: the first choice is the answer
            delta = _object(choice.get("delta"))
            out += self._delta(delta)
            if choice.get("finish_reason") and self._finish_reason is None:
                self._finish_reason = str(choice["finish_reason"])
                out += self._tool_calls_object()
        if isinstance(event.get("usage"), dict):
            self._usage = event["usage"]
        if self._finish_reason is not None and self._usage is not None:
            out.append(self._final_object())
        return out

    def close(self) -> list[dict[str, Any]]:
        if self._ended:
            return []
        if self._finish_reason is None:
            self._ended = True
            return [{"error": "The upstream stream ended before the answer was complete."}]
        return [self._final_object()]

    def _delta(self, delta: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        thinking = _reasoning(delta)
        if thinking:
            out.append(self._partial(thinking=thinking))
        if isinstance(delta.get("content"), str) and delta["content"]:
            out.append(self._partial(content=delta["content"]))
        for call in delta.get("tool_calls") or []:
            if isinstance(call, dict):
                self._collect(call)
        return out

    def _collect(self, call: dict[str, Any]) -> None:
        index = call["index"] if isinstance(call.get("index"), int) else len(self._calls)
        function = _object(call.get("function"))
        collected = self._calls.setdefault(index, {"name": "", "arguments": ""})
        # Only the first delta names the call; some upstreams repeat the name later.
        collected["name"] = collected["name"] or _text(function.get("name"))
        collected["arguments"] += _text(function.get("arguments"))

    def _tool_calls_object(self) -> list[dict[str, Any]]:
        if not self._calls or self._generate:
            return []
        calls = [
            {"function": {"name": call["name"], "arguments": _arguments(call["arguments"])}}
            for _, call in sorted(self._calls.items())
        ]
        return [{**self._head(), "message": {"role": "assistant", "content": "", "tool_calls": calls}, "done": False}]

    def _head(self) -> dict[str, Any]:
        return {"model": self._model, "created_at": self._created_at}

    def _partial(self, *, content: str = "", thinking: str = "") -> dict[str, Any]:
        if self._generate:
            body: dict[str, Any] = {"response": content}
            if thinking:
                body["thinking"] = thinking
        else:
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if thinking:
                message["thinking"] = thinking
            body = {"message": message}
        return {**self._head(), **body, "done": False}

    def _final_object(self) -> dict[str, Any]:
        self._ended = True
        final = _final(self._finish_reason, self._usage, self._clock() - self._started_ns)
        if self._generate:
            return {**self._head(), "response": "", **final, "context": []}
        return {**self._head(), "message": {"role": "assistant", "content": ""}, **final}


# --- /api/tags, /api/show and /api/ps ----------------------------------------


def ollama_tags(models: list[tuple[str, str]], *, modified_at: str) -> dict[str, Any]:
    """The /api/tags body for (model name, owner) pairs. Nothing is stored
    locally, so sizes are 0; the digest is a stable hash of the name, which
    is all clients use it for (telling models apart)."""
    return {"models": [_tag(name, owner, modified_at) for name, owner in models]}


def _tag(name: str, owner: str, modified_at: str) -> dict[str, Any]:
    return {
        "name": name,
        "model": name,
        "modified_at": modified_at,
        "size": 0,
        "digest": _digest(name),
        "details": _details(owner),
    }


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def _details(owner: str) -> dict[str, Any]:
    """What Ollama says of a model's weights. They live at the provider, so
    only the family (the provider named as the model's owner) is known."""
    return {
        "parent_model": "",
        "format": "",
        "family": owner,
        "families": [owner],
        "parameter_size": "",
        "quantization_level": "",
    }


def ollama_show(name: str, owner: str, *, modified_at: str) -> dict[str, Any]:
    """The /api/show body for a routed model. No modelfile, template or
    parameters exist here (the provider applies its own), so those are
    empty strings, which clients such as Open WebUI accept. Only
    `completion` is claimed: what else a remote model can do (tools,
    vision) is not known here."""
    return {
        "modelfile": "",
        "parameters": "",
        "template": "",
        "license": "",
        "details": _details(owner),
        "model_info": {"general.architecture": owner, "general.basename": name},
        "capabilities": ["completion"],
        "modified_at": modified_at,
    }


def ollama_ps(models: list[tuple[str, str]], *, expires_at: str) -> dict[str, Any]:
    """The /api/ps body: every model the key may use counts as running,
    since the provider keeps it loaded. `expires_at` is when Ollama's default
    keep-alive would end, as a local Ollama reports it."""
    return {
        "models": [
            {
                "name": name,
                "model": name,
                "size": 0,
                "digest": _digest(name),
                "details": _details(owner),
                "expires_at": expires_at,
                "size_vram": 0,
            }
            for name, owner in models
        ]
    }


# --- /api/embed and /api/embeddings ----------------------------------------

# Ollama embedding fields with no OpenAI equivalent: OpenAI never truncates
# (it refuses an input that is too long), and has no options or keep-alive.
_EMBED_DROPPED = ("truncate", "options", "keep_alive")


def ollama_embed_request_to_embeddings(body: dict[str, Any]) -> Translated:
    """/api/embed (`input`: a string or a list of them) as an OpenAI
    embeddings request for the same public model; routing replaces it."""
    out: dict[str, Any] = {"model": body.get("model"), "input": body.get("input")}
    if body.get("dimensions") is not None:
        out["dimensions"] = body["dimensions"]
    return Translated(body=out, notes=_embed_notes(body))


def ollama_embeddings_request_to_embeddings(body: dict[str, Any]) -> Translated:
    """The legacy /api/embeddings (one `prompt`) as an OpenAI embeddings request."""
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise TranslationError("'prompt' is required and must be a non-empty string.", param="prompt")
    return Translated(body={"model": body.get("model"), "input": prompt}, notes=_embed_notes(body))


def _embed_notes(body: dict[str, Any]) -> list[str]:
    # Only Ollama's own fields are named: the notes go in a header, and an
    # unknown field is ignored, as Ollama ignores it.
    return [f"dropped: {key}" for key in _EMBED_DROPPED if body.get(key) is not None]


def embeddings_response_to_ollama_embed(data: dict[str, Any], *, model: str, duration_ns: int) -> dict[str, Any]:
    """OpenAI's embeddings list as /api/embed's answer. Raises ValueError on
    an answer that is not OpenAI's shape."""
    usage = data.get("usage")
    return {
        "model": model,
        "embeddings": _vectors(data),
        "total_duration": duration_ns,
        "load_duration": 0,
        "prompt_eval_count": token_count(usage.get("prompt_tokens")) if isinstance(usage, dict) else 0,
    }


def embeddings_response_to_ollama_embeddings(data: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's embeddings list (of one input) as the legacy /api/embeddings answer."""
    vectors = _vectors(data)
    return {"embedding": vectors[0] if vectors else []}


def _vectors(data: dict[str, Any]) -> list[list[float]]:
    """The vectors in input order (OpenAI's `index`, which providers may not
    keep in order)."""
    items = data.get("data")
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise ValueError("an embeddings answer without a data list")
    vectors = []
    for item in sorted(items, key=_index):
        vector = item.get("embedding")
        if not isinstance(vector, list):  # base64: the request never asks for it
            raise ValueError("an embedding that is not a list of numbers")
        vectors.append(vector)
    return vectors


def _index(item: dict[str, Any]) -> int:
    index = item.get("index")
    return index if isinstance(index, int) else 0
