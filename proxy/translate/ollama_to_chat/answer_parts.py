"""What a whole chat answer and a streamed one both become in Ollama's
terms: tool call arguments as an object, and the final counts.

Ollama reports durations in nanoseconds. A remote upstream does not say how
its time split between reading the prompt and writing the answer, so all of
it is reported as eval_duration (that is what tokens-per-second displays
divide by) and load and prompt durations are 0.
"""

from typing import Any

import orjson

from proxy.providers.base import token_count


def tool_arguments(raw: Any) -> dict[str, Any]:
    """Ollama clients require an object. A model's malformed JSON is kept
    under "arguments" rather than lost, so the tool call still shows it."""
    if not isinstance(raw, str) or not raw.strip():
        return {}
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"arguments": raw}
    return parsed if isinstance(parsed, dict) else {"arguments": parsed}


def final_counts(finish_reason: Any, usage: Any, duration_ns: int) -> dict[str, Any]:
    """The fields that end an answer: `done`, why, and the counts and durations."""
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
