"""Chat-completions answers as Ollama's `/api/chat` and `/api/generate`
answers (chat -> Ollama)."""

from typing import Any

from proxy.translate.json_values import as_obj, as_str
from proxy.translate.ollama_to_chat.answer_parts import final_counts, tool_arguments
from proxy.translate.reasoning import reasoning_text


def chat_response_to_ollama_chat(
    data: dict[str, Any], *, model: str, created_at: str, duration_ns: int
) -> dict[str, Any]:
    choice, message = _first_choice(data)
    out_message: dict[str, Any] = {"role": "assistant", "content": as_str(message.get("content"))}
    thinking = reasoning_text(message)
    if thinking:
        out_message["thinking"] = thinking
    calls = [_ollama_tool_call(call) for call in message.get("tool_calls") or [] if isinstance(call, dict)]
    if calls:
        out_message["tool_calls"] = calls
    head = {"model": model, "created_at": created_at, "message": out_message}
    return {**head, **final_counts(choice.get("finish_reason"), data.get("usage"), duration_ns)}


def chat_response_to_ollama_generate(
    data: dict[str, Any], *, model: str, created_at: str, duration_ns: int
) -> dict[str, Any]:
    choice, message = _first_choice(data)
    out: dict[str, Any] = {"model": model, "created_at": created_at, "response": as_str(message.get("content"))}
    thinking = reasoning_text(message)
    if thinking:
        out["thinking"] = thinking
    return {**out, **final_counts(choice.get("finish_reason"), data.get("usage"), duration_ns), "context": []}


def _first_choice(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    choices = data.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = choice.get("message")
    return choice, message if isinstance(message, dict) else {}


def _ollama_tool_call(call: dict[str, Any]) -> dict[str, Any]:
    function = as_obj(call.get("function"))
    return {"function": {"name": as_str(function.get("name")), "arguments": tool_arguments(function.get("arguments"))}}
