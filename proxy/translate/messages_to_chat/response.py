"""Chat-completions answers as Anthropic messages (chat -> Messages), for an
Anthropic Messages client on a chat-completions upstream."""

import uuid

from proxy.translate.json_values import Json, as_list, as_obj, as_str
from proxy.translate.messages_to_chat.answer_parts import (
    message_text,
    message_usage,
    stop_reason_for,
    tool_use_id,
    tool_use_input,
)
from proxy.translate.reasoning import reasoning_text


def chat_response_to_message(data: Json, *, model: str) -> Json:
    """The Anthropic message for a non-streamed chat completion."""
    choices = data.get("choices") if isinstance(data, dict) else None
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = as_obj(choice.get("message"))
    content: list[Json] = []
    if reasoning := reasoning_text(message):
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    if text := message_text(message.get("content")):
        content.append({"type": "text", "text": text})
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        content.append({"type": "text", "text": refusal})
    calls = as_list(message.get("tool_calls"))
    content += [_tool_call_to_block(call) for call in calls if isinstance(call, dict)]
    stop_reason = "refusal" if refusal else stop_reason_for(choice.get("finish_reason"), used_tools=bool(calls))
    chat_id = data.get("id") if isinstance(data, dict) else None
    return {
        "id": "msg_" + (chat_id if isinstance(chat_id, str) and chat_id else uuid.uuid4().hex),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": message_usage(data.get("usage") if isinstance(data, dict) else None),
    }


def _tool_call_to_block(call: Json) -> Json:
    function = as_obj(call.get("function"))
    return {
        "type": "tool_use",
        "id": tool_use_id(call.get("id")),
        "name": as_str(function.get("name")),
        "input": tool_use_input(function.get("arguments")),
    }
