"""Chat chunks as Anthropic stream events, checked by the anthropic SDK (proxy.translate.messages_to_chat.stream)."""

from typing import Any

import anthropic
import httpx2
import orjson
from anthropic.types import RawMessageStreamEvent
from pydantic import TypeAdapter

from proxy.tests.test_translate_messages_to_chat_request import HI
from proxy.translate.messages_to_chat.stream import ChatToMessagesStream

STREAM_EVENT = TypeAdapter(RawMessageStreamEvent)


def chunk(delta: dict[str, Any] | None = None, finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4.1",
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish_reason}],
    }


def usage_chunk(prompt: int, completion: int, cached: int = 0) -> dict[str, Any]:
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4.1",
        "choices": [],
        "usage": usage,
    }


def tool_piece(index: int, arguments: str, call_id: str | None = None, name: str | None = None) -> dict[str, Any]:
    piece: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if call_id:
        piece |= {"id": call_id, "type": "function"}
        piece["function"]["name"] = name
    return chunk({"tool_calls": [piece]})


def run_stream(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    stream = ChatToMessagesStream(model="claude-sonnet-4-5", message_id="msg_1", input_tokens_estimate=12)
    events = [event for c in chunks for event in stream.feed(c)] + stream.close()
    for event in events:
        STREAM_EVENT.validate_python(event)  # every event is one the SDK knows
    return events


def sdk_final_message(events: list[dict[str, Any]]) -> anthropic.types.Message:
    """What the real SDK's messages.stream() makes of these events, served as SSE."""
    sse = b"".join(b"event: %s\ndata: %s\n\n" % (e["type"].encode(), orjson.dumps(e)) for e in events)

    def serve(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=sse)

    http = httpx2.Client(transport=httpx2.MockTransport(serve))
    client = anthropic.Anthropic(api_key="k", base_url="http://gateway.test", http_client=http)
    with client.messages.stream(model="gateway-alias", max_tokens=10, messages=HI) as stream:
        return stream.get_final_message()


MESSAGE_START = {
    "type": "message_start",
    "message": {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": 12,
            "output_tokens": 1,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    },
}


def start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def delta(index: int, **body: Any) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": body}


def stop(index: int) -> dict[str, Any]:
    return {"type": "content_block_stop", "index": index}


def message_end(stop_reason: str | None, usage: dict[str, int]) -> list[dict[str, Any]]:
    return [
        {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None}, "usage": usage},
        {"type": "message_stop"},
    ]


TEXT_CHUNKS = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Hello"}),
    chunk({"content": " there."}),
    chunk({}, "stop"),
    usage_chunk(100, 3, cached=80),
]


def test_a_text_stream_becomes_anthropic_events_with_the_real_usage() -> None:
    assert run_stream(TEXT_CHUNKS) == [
        MESSAGE_START,
        start(0, {"type": "text", "text": ""}),
        delta(0, type="text_delta", text="Hello"),
        delta(0, type="text_delta", text=" there."),
        stop(0),
        *message_end("end_turn", {"output_tokens": 3, "input_tokens": 20, "cache_read_input_tokens": 80}),
    ]


def test_message_delta_waits_for_the_usage_chunk() -> None:
    stream = ChatToMessagesStream(model="m", message_id="msg_1", input_tokens_estimate=1)
    fed = [stream.feed(c) for c in TEXT_CHUNKS]
    assert [[event["type"] for event in events] for events in fed[3:]] == [
        [],
        ["content_block_stop", "message_delta", "message_stop"],
    ]
    assert stream.close() == []


def test_chunks_without_choices_before_the_finish_do_not_end_the_stream() -> None:
    azure_first = {"id": "", "object": "", "choices": [], "prompt_filter_results": [{"prompt_index": 0}]}
    events = run_stream([azure_first, usage_chunk(5, 1), chunk({"content": "ok"}, "stop"), usage_chunk(5, 2)])
    assert events == [
        MESSAGE_START,
        start(0, {"type": "text", "text": ""}),
        delta(0, type="text_delta", text="ok"),
        stop(0),
        *message_end("end_turn", {"output_tokens": 2, "input_tokens": 5, "cache_read_input_tokens": 0}),
    ]


PARALLEL_TOOLS_CHUNKS = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "I'll look."}),
    tool_piece(0, "", call_id="call_a", name="Glob"),
    tool_piece(0, '{"pattern"'),
    tool_piece(0, ': "*.py"}'),
    tool_piece(1, '{"command": ', call_id="call_b", name="Bash"),
    tool_piece(1, '"ls -la"}'),
    chunk({}, "tool_calls"),
    usage_chunk(500, 40),
]


def test_text_then_two_parallel_tool_calls_stream_as_blocks_with_whole_arguments() -> None:
    events = run_stream(PARALLEL_TOOLS_CHUNKS)
    assert events == [
        MESSAGE_START,
        start(0, {"type": "text", "text": ""}),
        delta(0, type="text_delta", text="I'll look."),
        stop(0),
        start(1, {"type": "tool_use", "id": "call_a", "name": "Glob", "input": {}}),
        delta(1, type="input_json_delta", partial_json='{"pattern":"*.py"}'),
        stop(1),
        start(2, {"type": "tool_use", "id": "call_b", "name": "Bash", "input": {}}),
        delta(2, type="input_json_delta", partial_json='{"command":"ls -la"}'),
        stop(2),
        *message_end("tool_use", {"output_tokens": 40, "input_tokens": 500, "cache_read_input_tokens": 0}),
    ]
    message = sdk_final_message(events)
    assert [(b.type, getattr(b, "input", None)) for b in message.content] == [
        ("text", None),
        ("tool_use", {"pattern": "*.py"}),
        ("tool_use", {"command": "ls -la"}),
    ]
    assert (message.stop_reason, message.usage.input_tokens, message.usage.output_tokens) == ("tool_use", 500, 40)


def test_calls_without_an_index_are_told_apart_by_id() -> None:
    pieces = [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
        {"id": "c2", "type": "function", "function": {"name": "g", "arguments": '{"a":1}'}},
    ]
    events = run_stream([chunk({"tool_calls": pieces}), chunk({}, "stop")])
    assert events[1:] == [
        start(0, {"type": "tool_use", "id": "c1", "name": "f", "input": {}}),
        delta(0, type="input_json_delta", partial_json="{}"),
        stop(0),
        start(1, {"type": "tool_use", "id": "c2", "name": "g", "input": {}}),
        delta(1, type="input_json_delta", partial_json='{"a":1}'),
        stop(1),
        *message_end("tool_use", {"output_tokens": 3}),  # no usage chunk: (2 + 7 chars) / 4, rounded up
    ]


def test_reasoning_then_text_streams_a_thinking_block_first() -> None:
    events = run_stream(
        [
            chunk({"role": "assistant", "content": None, "reasoning_content": "The user"}),
            chunk({"reasoning_content": " greets."}),
            chunk({"content": "Hi!"}),
            chunk({}, "stop"),
            usage_chunk(10, 30),
        ]
    )
    assert events == [
        MESSAGE_START,
        start(0, {"type": "thinking", "thinking": "", "signature": ""}),
        delta(0, type="thinking_delta", thinking="The user"),
        delta(0, type="thinking_delta", thinking=" greets."),
        stop(0),
        start(1, {"type": "text", "text": ""}),
        delta(1, type="text_delta", text="Hi!"),
        stop(1),
        *message_end("end_turn", {"output_tokens": 30, "input_tokens": 10, "cache_read_input_tokens": 0}),
    ]
    message = sdk_final_message(events)
    assert [b.type for b in message.content] == ["thinking", "text"]


def test_a_broken_stream_still_ends_every_block_and_the_message() -> None:
    events = run_stream(
        [
            chunk({"role": "assistant", "content": "Let me"}),
            tool_piece(0, '{"command": "l', call_id="call_a", name="Bash"),
        ]
    )
    assert events == [
        MESSAGE_START,
        start(0, {"type": "text", "text": ""}),
        delta(0, type="text_delta", text="Let me"),
        stop(0),
        start(1, {"type": "tool_use", "id": "call_a", "name": "Bash", "input": {}}),
        delta(1, type="input_json_delta", partial_json='{"_raw_arguments":"{\\"command\\": \\"l"}'),
        stop(1),
        *message_end(None, {"output_tokens": 5}),  # (6 + 14 chars) / 4
    ]
    message = sdk_final_message(events)  # does not raise
    assert message.stop_reason is None
    assert message.content[1].input == {"_raw_arguments": '{"command": "l'}


def test_a_stream_that_ends_before_any_chunk_is_still_a_whole_message() -> None:
    assert run_stream([]) == [MESSAGE_START, *message_end(None, {"output_tokens": 0})]


def test_usage_on_the_finish_chunk_is_used_when_no_usage_chunk_follows() -> None:
    last = chunk({"content": "ok"}, "length") | {"usage": {"prompt_tokens": 9, "completion_tokens": 2}}
    assert run_stream([last])[-2:] == message_end(
        "max_tokens", {"output_tokens": 2, "input_tokens": 9, "cache_read_input_tokens": 0}
    )


def test_an_upstream_error_chunk_becomes_an_error_event_and_ends_the_stream() -> None:
    stream = ChatToMessagesStream(model="m", message_id="msg_1", input_tokens_estimate=1)
    assert stream.feed({"error": {"message": "overloaded", "type": "server_error"}}) == [
        {"type": "error", "error": {"type": "api_error", "message": "overloaded"}}
    ]
    assert (stream.feed(chunk({"content": "late"})), stream.close()) == ([], [])
