"""The text_completion choice a whole chat answer and a streamed chunk both
become."""

from typing import Any

_FINISH_REASONS = ("stop", "length", "content_filter")


def completion_choice(choice: dict[str, Any], position: int, text: str) -> dict[str, Any]:
    index = choice.get("index") if isinstance(choice.get("index"), int) else position
    finish_reason = _finish_reason(choice.get("finish_reason"))
    return {"text": text, "index": index, "logprobs": None, "finish_reason": finish_reason}


def _finish_reason(reason: Any) -> str | None:
    if reason is None:
        return None
    # tool_calls cannot happen (no tools are sent); anything unknown ended normally.
    return reason if reason in _FINISH_REASONS else "stop"
