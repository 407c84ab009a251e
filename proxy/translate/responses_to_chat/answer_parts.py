"""The Responses API objects a whole chat answer and a streamed one are both
built of: the response object, its usage and status, its output items.

Item ids are derived from the response id and the item's output index
(`msg_<id>_0`, `fc_<id>_1`): the same answer always gets the same ids, and
streamed and non-streamed answers agree.
"""

from typing import Any

from proxy.providers.base import token_count
from proxy.translate.json_values import as_obj


def response_object(
    response_id: str,
    created_at: int,
    model: str,
    request: dict[str, Any],
    *,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    incomplete_details: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Responses `response` object echoing the request's settings, as OpenAI's does."""
    tools = request.get("tools")
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "error": error,
        "incomplete_details": incomplete_details,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": model,
        "output": output,
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": request.get("previous_response_id"),
        "reasoning": request.get("reasoning"),
        "temperature": request.get("temperature"),
        "text": request.get("text") or {"format": {"type": "text"}},
        "tool_choice": request.get("tool_choice") or "auto",
        # Only the tools the upstream actually saw: the others were dropped.
        "tools": [tool for tool in tools if isinstance(tool, dict) and tool.get("type") == "function"]
        if isinstance(tools, list)
        else [],
        "top_p": request.get("top_p"),
        "user": request.get("user"),
        "metadata": request.get("metadata") or {},
        "usage": usage,
    }


def responses_usage(usage: Any) -> dict[str, Any] | None:
    """Both APIs count cached tokens inside input and reasoning inside output."""
    if not isinstance(usage, dict):
        return None
    prompt = token_count(usage.get("prompt_tokens"))
    completion = token_count(usage.get("completion_tokens"))
    prompt_details = _details(usage, "prompt_tokens_details")
    cached = token_count(prompt_details.get("cached_tokens"))
    cache_write = token_count(prompt_details.get("cache_write_tokens"))
    reasoning = token_count(_details(usage, "completion_tokens_details").get("reasoning_tokens"))
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": cache_write},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": token_count(usage.get("total_tokens")) or prompt + completion,
    }


def _details(usage: dict[str, Any], name: str) -> dict[str, Any]:
    return as_obj(usage.get(name))


def response_status(finish_reason: Any) -> tuple[str, dict[str, Any] | None]:
    if finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish_reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


class ItemIds:
    """The ids of one response's output items (see the module docstring)."""

    def __init__(self, response_id: str) -> None:
        self.suffix = response_id.removeprefix("resp_")

    def make(self, prefix: str, output_index: int) -> str:
        return f"{prefix}_{self.suffix}_{output_index}"


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": []}


def refusal_part(refusal: str) -> dict[str, Any]:
    return {"type": "refusal", "refusal": refusal}


def reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    return {"type": "reasoning", "id": item_id, "summary": [{"type": "summary_text", "text": text}]}


def message_item(item_id: str, parts: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": parts}


def function_call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }
