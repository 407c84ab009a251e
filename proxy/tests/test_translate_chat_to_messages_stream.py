"""Anthropic stream events as chat chunks (proxy.translate.chat_to_messages.stream, pure)."""

from typing import Any

from proxy.translate.chat_to_messages.stream import MessagesToChatStream

START: dict[str, Any] = {
    "type": "message_start",
    "message": {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-up",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": 25,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 0,
            "output_tokens": 1,
        },
    },
}
PING: dict[str, Any] = {"type": "ping"}
STOP: dict[str, Any] = {"type": "message_stop"}


def block_start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def block_delta(index: int, **delta: str) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": delta}


def block_stop(index: int) -> dict[str, Any]:
    return {"type": "content_block_stop", "index": index}


def message_delta(stop_reason: str, output_tokens: int) -> dict[str, Any]:
    return {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        "usage": {"output_tokens": output_tokens},
    }


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 7,
        "model": "gpt-public",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def usage_chunk(prompt: int, completion: int, cached: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 7,
        "model": "gpt-public",
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        },
    }


def run(events: list[dict[str, Any]], *, include_usage: bool = True) -> list[dict[str, Any]]:
    stream = MessagesToChatStream(
        model="gpt-public", completion_id="chatcmpl-1", created=7, include_usage=include_usage
    )
    out = [c for event in events for c in stream.feed(event)]
    return out + stream.close()


TEXT_EVENTS: list[dict[str, Any]] = [
    START,
    PING,
    block_start(0, {"type": "text", "text": ""}),
    block_delta(0, type="text_delta", text="Hel"),
    block_delta(0, type="text_delta", text="lo"),
    block_stop(0),
    message_delta("end_turn", 2),
    STOP,
]


def test_a_text_stream_becomes_role_content_finish_and_usage_chunks() -> None:
    assert run(TEXT_EVENTS) == [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hel"}),
        chunk({"content": "lo"}),
        chunk({}, "stop"),
        usage_chunk(125, 2, 100),
    ]


def test_without_include_usage_no_usage_chunk_is_sent() -> None:
    assert run(TEXT_EVENTS, include_usage=False)[-1] == chunk({}, "stop")


def test_thinking_streams_as_reasoning_content_before_the_text() -> None:
    events = [
        START,
        block_start(0, {"type": "thinking", "thinking": ""}),
        block_delta(0, type="thinking_delta", thinking="Let me think."),
        block_delta(0, type="signature_delta", signature="EqQBCgIYAhIM"),
        block_stop(0),
        block_start(1, {"type": "text", "text": ""}),
        block_delta(1, type="text_delta", text="42"),
        block_stop(1),
        message_delta("max_tokens", 9),
        STOP,
    ]
    assert run(events, include_usage=False) == [
        chunk({"role": "assistant", "content": ""}),
        chunk({"reasoning_content": "Let me think."}),
        chunk({"content": "42"}),
        chunk({}, "length"),
    ]


def test_tool_use_streams_as_tool_calls_counted_from_zero_with_split_arguments() -> None:
    events = [
        START,
        block_start(0, {"type": "text", "text": ""}),
        block_delta(0, type="text_delta", text="Looking."),
        block_stop(0),
        block_start(1, {"type": "tool_use", "id": "toolu_a", "name": "lookup", "input": {}}),
        block_delta(1, type="input_json_delta", partial_json=""),
        block_delta(1, type="input_json_delta", partial_json='{"q": "ca'),
        block_delta(1, type="input_json_delta", partial_json='ts"}'),
        block_stop(1),
        block_start(2, {"type": "tool_use", "id": "toolu_b", "name": "now", "input": {}}),
        block_delta(2, type="input_json_delta", partial_json="{}"),
        block_stop(2),
        message_delta("tool_use", 30),
        STOP,
    ]
    assert run(events, include_usage=False) == [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Looking."}),
        chunk(
            {
                "tool_calls": [
                    {"index": 0, "id": "toolu_a", "type": "function", "function": {"name": "lookup", "arguments": ""}}
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"q": "ca'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ts"}'}}]}),
        chunk(
            {
                "tool_calls": [
                    {"index": 1, "id": "toolu_b", "type": "function", "function": {"name": "now", "arguments": ""}}
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}),
        chunk({}, "tool_calls"),
    ]


def test_input_counts_repeated_in_message_delta_reach_the_usage_chunk() -> None:
    delta = {
        **message_delta("end_turn", 3),
        "usage": {"input_tokens": 40, "cache_read_input_tokens": None, "output_tokens": 3},
    }
    assert run([START, delta, STOP])[-1] == usage_chunk(140, 3, 100)


def test_a_stream_broken_before_message_delta_ends_without_finish_or_usage() -> None:
    assert run(TEXT_EVENTS[:4]) == [chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"})]


def test_an_error_event_passes_on_as_an_error_and_nothing_follows_from_close() -> None:
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert run([*TEXT_EVENTS[:4], error]) == [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hel"}),
        {"error": {"type": "overloaded_error", "message": "Overloaded"}},
    ]


def test_a_stream_cut_after_message_delta_still_gets_its_usage_chunk_from_close() -> None:
    assert run(TEXT_EVENTS[:-1])[-2:] == [chunk({}, "stop"), usage_chunk(125, 2, 100)]


def test_a_message_stop_without_message_delta_is_finished_by_close() -> None:
    assert run([START, STOP], include_usage=False) == [chunk({"role": "assistant", "content": ""}), chunk({}, "stop")]


def test_close_sends_nothing_twice() -> None:
    stream = MessagesToChatStream(model="gpt-public", completion_id="chatcmpl-1", created=7, include_usage=True)
    sent = [c for event in TEXT_EVENTS for c in stream.feed(event)]
    assert sent[-1] == usage_chunk(125, 2, 100)
    assert stream.close() == []
