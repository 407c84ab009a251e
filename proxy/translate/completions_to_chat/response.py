"""Chat-completions answers as legacy text completions (chat ->
completions), for a legacy completions client on a chat upstream."""

from typing import Any

from proxy.translate.completions_to_chat.answer_parts import completion_choice


def chat_response_to_completion(data: dict[str, Any], *, model: str) -> dict[str, Any]:
    choices = []
    for position, choice in enumerate(data.get("choices") or []):
        message = choice.get("message") if isinstance(choice, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        choices.append(completion_choice(choice, position, content if isinstance(content, str) else ""))
    completion = {
        "id": "cmpl-" + str(data.get("id") or "").removeprefix("chatcmpl-"),
        "object": "text_completion",
        "created": data.get("created") or 0,
        "model": model,
        "choices": choices,
    }
    if data.get("system_fingerprint"):
        completion["system_fingerprint"] = data["system_fingerprint"]
    if isinstance(data.get("usage"), dict):
        completion["usage"] = data["usage"]  # the same object in both APIs
    return completion
