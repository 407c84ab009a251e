"""Anthropic Messages answers as chat completions (Messages -> chat), for a
chat-completions client on an Anthropic upstream."""

import time
from typing import Any

import orjson

from proxy.translate.chat_to_messages.answer_parts import chat_usage, finish_reason


def message_response_to_chat(data: dict[str, Any], *, model: str, created: int | None = None) -> dict[str, Any]:
    """An Anthropic message as a chat.completion answering for `model`."""
    text: list[str] = []
    thinking: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in data.get("content") or ():
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            text.append(block.get("text") or "")
        elif kind == "thinking":
            thinking.append(block.get("thinking") or "")
        elif kind == "tool_use":
            calls.append(_tool_call(block))
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text else None}
    if thinking:
        message["reasoning_content"] = "".join(thinking)
    if calls:
        message["tool_calls"] = calls
    answer = {
        "id": "chatcmpl-" + str(data.get("id", "")),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason(data.get("stop_reason"))}],
    }
    usage = chat_usage(data.get("usage"))
    if usage is not None:
        answer["usage"] = usage
    return answer


def _tool_call(block: dict[str, Any]) -> dict[str, Any]:
    arguments = orjson.dumps(block.get("input") or {}).decode()
    return {"id": block.get("id"), "type": "function", "function": {"name": block.get("name"), "arguments": arguments}}
