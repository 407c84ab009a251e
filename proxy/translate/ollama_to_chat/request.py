"""Ollama's `/api/chat` and `/api/generate` requests as chat completions
(Ollama -> chat), so Ollama clients (Open WebUI, LangChain's ChatOllama, the
`ollama` package) can use every model the gateway routes.

Ollama's differences that matter here: streaming is on unless the request
says `"stream": false`; tool calls carry their arguments as an object and
have no id; tool results name the tool instead of the call; images are bare
base64 strings.
"""

from typing import Any

import orjson

from proxy.translate import Translated, TranslationError, note_once

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
                note_once(notes, "dropped: message thinking")
            converted = {"role": role, "content": _content(content, message.get("images"), f"{where}.images")}
            if role == "assistant" and message.get("tool_calls"):
                converted["tool_calls"] = _tool_calls(message["tool_calls"], len(messages), where)
                pending = [(call["id"], call["function"]["name"]) for call in converted["tool_calls"]]
            messages.append(converted)
        else:
            raise TranslationError(f"{where}.role must be system, user, assistant or tool.", param=f"{where}.role")
    return messages


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
