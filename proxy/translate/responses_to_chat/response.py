"""Chat-completions answers as Responses API responses (chat -> Responses),
for a Responses client on an upstream without the API."""

from typing import Any

from proxy.translate.json_values import as_str
from proxy.translate.reasoning import reasoning_text
from proxy.translate.responses_to_chat.answer_parts import (
    ItemIds,
    function_call_item,
    message_item,
    reasoning_item,
    refusal_part,
    response_object,
    response_status,
    responses_usage,
    text_part,
)


def chat_response_to_responses(
    data: dict[str, Any], *, model: str, response_id: str, created_at: int, request: dict[str, Any]
) -> dict[str, Any]:
    choices = data.get("choices") or [{}]
    choice = choices[0]
    message = choice.get("message") or {}
    status, incomplete = response_status(choice.get("finish_reason"))
    item_status = "completed" if status == "completed" else "incomplete"
    ids = ItemIds(response_id)
    output: list[dict[str, Any]] = []
    reasoning = reasoning_text(message)
    if reasoning:
        output.append(reasoning_item(ids.make("rs", len(output)), reasoning))
    text, refusal = as_str(message.get("content")), as_str(message.get("refusal"))
    calls = [call for call in message.get("tool_calls") or [] if isinstance(call, dict)]
    if text or refusal or not calls:
        parts = [text_part(text)] if text or not refusal else []
        parts += [refusal_part(refusal)] if refusal else []
        output.append(message_item(ids.make("msg", len(output)), parts, item_status))
    for i, call in enumerate(calls):
        function = call.get("function") or {}
        output.append(
            function_call_item(
                ids.make("fc", len(output)),
                call.get("id") or f"call_{i}",
                function.get("name") or "",
                function.get("arguments") or "",
                item_status,
            )
        )
    usage = responses_usage(data.get("usage"))
    return response_object(
        response_id,
        created_at,
        model,
        request,
        status=status,
        output=output,
        usage=usage,
        incomplete_details=incomplete,
    )
