"""Chat completions as Anthropic messages (proxy.translate.messages_to_chat.response)."""

from typing import Any

import pytest
from anthropic.types import Message

from proxy.translate.messages_to_chat.response import chat_response_to_message


def completion(message: dict[str, Any], finish_reason: str | None = "stop", usage: Any = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4.1",
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish_reason}],
        "usage": usage,
    }


def to_message(data: dict[str, Any]) -> dict[str, Any]:
    message = chat_response_to_message(data, model="claude-sonnet-4-5")
    Message.model_validate(message)  # the SDK accepts it
    return message


ZERO_USAGE = {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}


def test_a_text_answer_becomes_a_message_with_cached_tokens_apart() -> None:
    usage = {"prompt_tokens": 100, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 64}}
    assert to_message(completion({"content": "Hello."}, usage=usage)) == {
        "id": "msg_chatcmpl-1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "Hello."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 36,
            "output_tokens": 7,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 64,
        },
    }


def test_tool_calls_become_tool_use_blocks() -> None:
    calls = [
        {"id": "call_1", "type": "function", "function": {"name": "Bash", "arguments": '{"command": "ls"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "Read", "arguments": '"{\\"path\\": \\"a\\"}"'}},
        {"id": "call_3", "type": "function", "function": {"name": "Glob", "arguments": '{"pattern": '}},
        {"id": "call_4", "type": "function", "function": {"name": "LS", "arguments": ""}},
    ]
    message = to_message(completion({"content": None, "tool_calls": calls}, "tool_calls"))
    assert message["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "Bash", "input": {"command": "ls"}},
        {"type": "tool_use", "id": "call_2", "name": "Read", "input": {"path": "a"}},  # encoded twice
        {"type": "tool_use", "id": "call_3", "name": "Glob", "input": {"_raw_arguments": '{"pattern": '}},
        {"type": "tool_use", "id": "call_4", "name": "LS", "input": {}},
    ]
    assert message["stop_reason"] == "tool_use"


def test_reasoning_content_becomes_a_thinking_block_before_the_text() -> None:
    usage = {"prompt_tokens": 10, "completion_tokens": 50, "completion_tokens_details": {"reasoning_tokens": 40}}
    message = to_message(completion({"content": "42", "reasoning_content": "Let me think."}, usage=usage))
    assert message["content"] == [
        {"type": "thinking", "thinking": "Let me think.", "signature": ""},
        {"type": "text", "text": "42"},
    ]
    assert message["usage"]["output_tokens"] == 50  # thinking included, as Anthropic counts it


@pytest.mark.parametrize(
    ("finish_reason", "stop_reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("function_call", "tool_use"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
        ("something_new", "end_turn"),
    ],
)
def test_each_finish_reason_has_its_stop_reason(finish_reason: str | None, stop_reason: str) -> None:
    assert to_message(completion({"content": "x"}, finish_reason))["stop_reason"] == stop_reason


def test_tool_calls_with_finish_reason_stop_still_stop_for_tool_use() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    assert to_message(completion({"content": None, "tool_calls": [call]}, "stop"))["stop_reason"] == "tool_use"


def test_a_refusal_becomes_text_with_stop_reason_refusal() -> None:
    message = to_message(completion({"content": None, "refusal": "I can't help with that."}))
    assert message["content"] == [{"type": "text", "text": "I can't help with that."}]
    assert message["stop_reason"] == "refusal"


def test_an_answer_without_choices_or_usage_is_an_empty_message() -> None:
    message = to_message({"id": "x"})
    assert (message["content"], message["stop_reason"], message["usage"]) == ([], "end_turn", ZERO_USAGE)
