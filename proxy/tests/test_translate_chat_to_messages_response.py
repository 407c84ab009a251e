"""Anthropic messages as chat completions (proxy.translate.chat_to_messages.response, pure)."""

from typing import Any

import pytest

from proxy.translate.chat_to_messages.response import message_response_to_chat


def anthropic_message(content: list[dict[str, Any]], stop_reason: str = "end_turn", **usage: int) -> dict[str, Any]:
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-up",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 5, **usage},
    }


def test_a_text_message_becomes_a_chat_completion_for_the_clients_model() -> None:
    data = anthropic_message([{"type": "text", "text": "Hello"}, {"type": "text", "text": " world"}])
    assert message_response_to_chat(data, model="gpt-public", created=1_700_000_000) == {
        "id": "chatcmpl-msg_01",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-public",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello world"}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "total_tokens": 15,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
    }


def test_thinking_becomes_reasoning_content_and_tool_use_becomes_tool_calls() -> None:
    data = anthropic_message(
        [
            {"type": "thinking", "thinking": "The user wants cats.", "signature": "sig"},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "cats", "n": 2}},
        ],
        stop_reason="tool_use",
    )
    choice = message_response_to_chat(data, model="m", created=1)["choices"][0]
    assert choice == {
        "index": 0,
        "finish_reason": "tool_calls",
        "message": {
            "role": "assistant",
            "content": None,
            "reasoning_content": "The user wants cats.",
            "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q":"cats","n":2}'}}
            ],
        },
    }


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("something_new", "stop"),
    ],
)
def test_stop_reasons_map_to_finish_reasons(stop_reason: str, finish_reason: str) -> None:
    data = anthropic_message([{"type": "text", "text": "x"}], stop_reason=stop_reason)
    assert message_response_to_chat(data, model="m", created=1)["choices"][0]["finish_reason"] == finish_reason


def test_prompt_tokens_include_cache_reads_and_writes_as_openai_counts_them() -> None:
    data = anthropic_message(
        [{"type": "text", "text": "x"}], cache_read_input_tokens=100, cache_creation_input_tokens=30
    )
    assert message_response_to_chat(data, model="m", created=1)["usage"] == {
        "prompt_tokens": 140,
        "completion_tokens": 5,
        "total_tokens": 145,
        "prompt_tokens_details": {"cached_tokens": 100},
    }


def test_created_defaults_to_now() -> None:
    answer = message_response_to_chat(anthropic_message([]), model="m")
    assert isinstance(answer["created"], int) and answer["created"] > 1_700_000_000
