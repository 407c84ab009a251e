"""Anthropic Messages requests for chat-completions upstreams (Messages -> chat).

Choices made where the two APIs do not line up:

* A base64 PDF `document` becomes a chat `file` part, a plain-text document
  a text part; URL and Files-API sources have no chat equivalent and are
  dropped with a note.
* Images inside a `tool_result` move to the user message that follows the
  tool messages: chat `tool` messages carry text only.
"""

import hashlib
from typing import Any

from proxy.translate import Translated, TranslationError
from proxy.translate.json_values import Json, as_obj, as_str, compact_json

# OpenAI rejects a longer `user`; Claude Code's user_id is about 150 characters.
USER_MAX_CHARS = 64
# `thinking.budget_tokens` below LOW_BELOW maps to "low", below MEDIUM_BELOW to "medium", else "high".
REASONING_LOW_BELOW = 4096
REASONING_MEDIUM_BELOW = 16384

# Top-level fields mapped below; every other field is dropped with a note.
_MAPPED_FIELDS = frozenset(
    {"model", "messages", "system", "max_tokens", "stop_sequences", "temperature", "top_p", "metadata", "stream"}
    | {"tools", "tool_choice", "thinking"}
)
_TOOL_FIELDS = frozenset({"type", "name", "description", "input_schema", "cache_control", "strict"})
_TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}


class _Notes:
    """Header-safe notes, each once, in order (exchange.py joins them with "; ")."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, note: str) -> None:
        clean = "".join(c for c in note if " " <= c <= "~" and c != ";")[:120]
        if clean not in self.items:
            self.items.append(clean)


def messages_request_to_chat(body: Json, *, upstream_model: str) -> Translated:
    """The chat completions request for an Anthropic Messages request."""
    if not isinstance(body, dict):
        raise TranslationError("The request body must be a JSON object.")
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise TranslationError("messages must be a list.", param="messages")
    notes = _Notes()
    system = _system_texts(body.get("system"), notes)
    chat: list[Json] = []
    for position, message in enumerate(messages):
        chat += _message_to_chat(message, position, system, notes)
    if system:
        chat.insert(0, {"role": "system", "content": "\n\n".join(system)})
    out: Json = {"model": upstream_model, "messages": chat}
    _map_generation(body, out, notes)
    _map_tools(body, out, notes)
    _map_thinking(body.get("thinking"), out, notes)
    for name in body:
        if name not in _MAPPED_FIELDS:
            notes.add(f"dropped: {name}")
    return Translated(out, notes.items)


def _system_texts(system: Any, notes: _Notes) -> list[str]:
    if system is None:
        return []
    if isinstance(system, str):
        return [system] if system else []
    if not isinstance(system, list):
        raise TranslationError("system must be a string or a list of text blocks.", param="system")
    return [text for block in _blocks(system, "system") if (text := _system_block_text(block, notes))]


def _system_block_text(block: Json, notes: _Notes) -> str:
    _note_cache_control(block, notes)
    if block.get("type") != "text":
        notes.add(f"dropped: system {block.get('type')} block")
        return ""
    return as_str(block.get("text"))


def _message_to_chat(message: Any, position: int, system: list[str], notes: _Notes) -> list[Json]:
    where = f"messages[{position}]"
    if not isinstance(message, dict):
        raise TranslationError(f"{where} must be an object.", param=where)
    content = message.get("content")
    if isinstance(content, str):
        blocks = [{"type": "text", "text": content}]
    elif isinstance(content, list):
        blocks = _blocks(content, f"{where}.content")
    else:
        raise TranslationError(f"{where}.content must be a string or a list of blocks.", param=f"{where}.content")
    match message.get("role"):
        case "user":
            return _user_to_chat(blocks, notes)
        case "assistant":
            return _assistant_to_chat(blocks, notes)
        case "system":  # Claude Code sends these to some models
            notes.add("mapped: system entry in messages")
            system += [text for block in blocks if (text := _system_block_text(block, notes))]
            return []
    raise TranslationError(f"{where}.role must be user or assistant.", param=f"{where}.role")


def _blocks(items: list[Any], where: str) -> list[Json]:
    if not all(isinstance(item, dict) for item in items):
        raise TranslationError(f"Every block in {where} must be an object.", param=where)
    return items


def _user_to_chat(blocks: list[Json], notes: _Notes) -> list[Json]:
    """Tool results first, as `tool` messages, then what the user said."""
    tool_messages: list[Json] = []
    tool_images: list[Json] = []
    parts: list[Json] = []
    for block in blocks:
        _note_cache_control(block, notes)
        if block.get("type") == "tool_result":
            text, images = _tool_result_content(block, notes)
            tool_messages.append({"role": "tool", "tool_call_id": as_str(block.get("tool_use_id")), "content": text})
            tool_images += images
        else:
            parts += _user_parts(block, notes)
    parts = tool_images + parts
    if not parts:
        return tool_messages
    return [*tool_messages, {"role": "user", "content": _user_content(parts)}]


def _user_content(parts: list[Json]) -> str | list[Json]:
    # Plain text goes as a string: several OpenAI-compatible servers accept nothing else.
    if all(part["type"] == "text" for part in parts):
        return "\n\n".join(part["text"] for part in parts)
    return parts


def _user_parts(block: Json, notes: _Notes) -> list[Json]:
    match block.get("type"):
        case "text":
            return [{"type": "text", "text": as_str(block.get("text"))}]
        case "image":
            return _image_part(block, notes)
        case "document":
            return _document_parts(block, notes)
    notes.add(f"dropped: {block.get('type')} block")
    return []


def _image_part(block: Json, notes: _Notes) -> list[Json]:
    source = as_obj(block.get("source"))
    match source.get("type"):
        case "base64":
            url = f"data:{as_str(source.get('media_type'))};base64,{as_str(source.get('data'))}"
        case "url":
            url = as_str(source.get("url"))
        case other:
            notes.add(f"dropped: image ({other} source)")
            return []
    return [{"type": "image_url", "image_url": {"url": url}}]


def _document_parts(block: Json, notes: _Notes) -> list[Json]:
    source = as_obj(block.get("source"))
    title, context = as_str(block.get("title")), as_str(block.get("context"))
    if block.get("citations"):
        notes.add("dropped: citations")
    match source.get("type"), source.get("media_type"):
        case "text", _:
            return [{"type": "text", "text": "\n\n".join(filter(None, [title, context, as_str(source.get("data"))]))}]
        case "content", _:
            inner = source.get("content")
            if isinstance(inner, str):
                inner = [{"type": "text", "text": inner}]
            blocks = [b for b in inner if isinstance(b, dict)] if isinstance(inner, list) else []
            return [part for b in blocks for part in _user_parts(b, notes)]
        case "base64", "application/pdf":
            notes.add("mapped: pdf document -> file part")
            if context:
                notes.add("dropped: document context")
            data_url = f"data:application/pdf;base64,{as_str(source.get('data'))}"
            return [{"type": "file", "file": {"filename": title or "document.pdf", "file_data": data_url}}]
        case other, _:
            notes.add(f"dropped: document ({other} source)")
            return []


def _tool_result_content(block: Json, notes: _Notes) -> tuple[str, list[Json]]:
    content = block.get("content")
    texts: list[str] = []
    images: list[Json] = []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for item in (c for c in content if isinstance(c, dict)):
            _note_cache_control(item, notes)
            if item.get("type") == "text":
                texts.append(as_str(item.get("text")))
            elif item.get("type") == "image":
                notes.add("mapped: tool_result image -> user message")
                images += _image_part(item, notes)
            else:
                notes.add(f"dropped: {item.get('type')} in tool_result")
    text = "\n".join(texts)
    return ("Error: " + text if block.get("is_error") is True else text), images


def _assistant_to_chat(blocks: list[Json], notes: _Notes) -> list[Json]:
    texts: list[str] = []
    tool_calls: list[Json] = []
    for block in blocks:
        _note_cache_control(block, notes)
        match block.get("type"):
            case "text":
                texts.append(as_str(block.get("text")))
            case "tool_use":
                tool_calls.append(_tool_use_to_call(block))
            case "thinking" | "redacted_thinking":
                notes.add("dropped: thinking blocks")
            case other:
                notes.add(f"dropped: {other} block")
    texts = [text for text in texts if text]
    if not texts and not tool_calls:
        return []  # only thinking: nothing an upstream could use
    message: Json = {"role": "assistant", "content": "\n\n".join(texts) if texts else None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return [message]


def _tool_use_to_call(block: Json) -> Json:
    arguments = compact_json(block.get("input", {}))
    return {
        "id": as_str(block.get("id")),
        "type": "function",
        "function": {"name": as_str(block.get("name")), "arguments": arguments},
    }


def _note_cache_control(block: Json, notes: _Notes) -> None:
    if "cache_control" in block:
        notes.add("dropped: cache_control")


def _map_generation(body: Json, out: Json, notes: _Notes) -> None:
    # max_tokens stays max_tokens: some compatible upstreams do not know max_completion_tokens.
    for source, target in (("max_tokens", "max_tokens"), ("temperature", "temperature"), ("top_p", "top_p")):
        if body.get(source) is not None:
            out[target] = body[source]
    if body.get("stop_sequences"):
        out["stop"] = body["stop_sequences"]
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}  # the real counts for message_delta
    _map_metadata(body.get("metadata"), out, notes)


def _map_metadata(metadata: Any, out: Json, notes: _Notes) -> None:
    if not isinstance(metadata, dict):
        if metadata is not None:
            notes.add("dropped: metadata")
        return
    user = metadata.get("user_id")
    if isinstance(user, str) and user:
        if len(user) > USER_MAX_CHARS:  # a stable digest still tells users apart
            user = hashlib.sha256(user.encode()).hexdigest()
            notes.add("mapped: metadata.user_id -> user (sha256)")
        out["user"] = user
    for name in metadata:
        if name != "user_id":
            notes.add(f"dropped: metadata.{name}")


def _map_tools(body: Json, out: Json, notes: _Notes) -> None:
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise TranslationError("tools must be a list.", param="tools")
        functions = [function for tool in _blocks(tools, "tools") if (function := _tool_to_function(tool, notes))]
        if functions:
            out["tools"] = functions
    if body.get("tool_choice") is not None:
        _map_tool_choice(body["tool_choice"], out, notes)


def _tool_to_function(tool: Json, notes: _Notes) -> Json | None:
    kind = tool.get("type")
    if kind not in (None, "custom"):  # web search, bash, text editor...: run by Anthropic
        notes.add(f"dropped: server tool {kind}")
        return None
    _note_cache_control(tool, notes)
    function: Json = {"name": as_str(tool.get("name"))}
    if tool.get("description") is not None:
        function["description"] = tool["description"]
    function["parameters"] = tool.get("input_schema") or {"type": "object", "properties": {}}
    if tool.get("strict") is not None:
        function["strict"] = tool["strict"]
    for name in tool:
        if name not in _TOOL_FIELDS:
            notes.add(f"dropped: tool field {name}")
    return {"type": "function", "function": function}


def _map_tool_choice(choice: Any, out: Json, notes: _Notes) -> None:
    if not isinstance(choice, dict):
        raise TranslationError("tool_choice must be an object.", param="tool_choice")
    kind = choice.get("type")
    if "tools" not in out:  # chat completions rejects a tool_choice without tools
        if kind != "none":
            notes.add("dropped: tool_choice (no tools left)")
        return
    if kind == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": as_str(choice.get("name"))}}
    elif kind in _TOOL_CHOICES:
        out["tool_choice"] = _TOOL_CHOICES[kind]
    else:
        notes.add(f"dropped: tool_choice {kind}")
    if choice.get("disable_parallel_tool_use") is True:
        out["parallel_tool_calls"] = False


def _map_thinking(thinking: Any, out: Json, notes: _Notes) -> None:
    if thinking is None:
        return
    if not isinstance(thinking, dict):
        raise TranslationError("thinking must be an object.", param="thinking")
    match thinking.get("type"):
        case "enabled":
            effort = _effort_for_budget(thinking.get("budget_tokens"))
        case "adaptive":
            effort = "medium"
        case "disabled":
            return
        case other:
            notes.add(f"dropped: thinking {other}")
            return
    out["reasoning_effort"] = effort
    notes.add(f"mapped: thinking -> reasoning_effort={effort}")


def _effort_for_budget(budget: Any) -> str:
    if not isinstance(budget, int):
        return "medium"
    if budget < REASONING_LOW_BELOW:
        return "low"
    return "medium" if budget < REASONING_MEDIUM_BELOW else "high"
