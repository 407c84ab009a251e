"""What a whole chat answer and a streamed one both become in Anthropic's
terms: tool_use ids and inputs, the stop reason, the usage.

Tool call arguments that are not a JSON object become
`{"_raw_arguments": "<what the model wrote>"}`: nothing is lost, and the
client's tool validation rejects it, so the model sees its mistake and can
retry.
"""

import uuid
from typing import Any

import orjson

from proxy.providers.openai import usage_from_openai
from proxy.translate.json_values import Json, as_str

RAW_ARGUMENTS_KEY = "_raw_arguments"
STOP_REASONS = {
    "stop": "end_turn",  # OpenAI does not say whether a stop sequence ended it
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def message_text(content: Any) -> str:
    if isinstance(content, list):  # a few compatible servers answer in parts
        return "".join(as_str(part.get("text")) for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


def tool_use_id(value: Any) -> str:
    return value if isinstance(value, str) and value else "toolu_" + uuid.uuid4().hex[:24]


def tool_use_input(arguments: Any) -> Json:
    """A tool call's `arguments` as Anthropic's `input` object (see the module docstring)."""
    if isinstance(arguments, dict):  # some servers send the object itself
        return arguments
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    parsed: Any = arguments
    for _ in range(2):  # some models encode the object twice
        try:
            parsed = orjson.loads(parsed)
        except orjson.JSONDecodeError:
            break
        if not isinstance(parsed, str):
            break
    return parsed if isinstance(parsed, dict) else {RAW_ARGUMENTS_KEY: arguments}


def stop_reason_for(finish_reason: Any, *, used_tools: bool) -> str:
    reason = STOP_REASONS.get(finish_reason, "end_turn") if isinstance(finish_reason, str) else "end_turn"
    # Some upstreams (Gemini's compatible API) say "stop" after calling tools.
    return "tool_use" if used_tools and reason == "end_turn" else reason


def message_usage(usage: Any) -> Json:
    counts = usage_from_openai(usage)
    if counts is None:
        return {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    return {
        "input_tokens": counts.input_tokens,
        # Anthropic's output_tokens include thinking, as completion_tokens normally do.
        "output_tokens": counts.output_tokens + counts.reasoning_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": counts.cached_input_tokens,
    }
