"""Chat chunks as Responses API stream events, checked by the openai SDK (proxy.translate.responses_to_chat.stream)."""

from typing import Any

import httpx2
import openai
import orjson
from openai._types import omit
from openai.lib.streaming.responses import ResponseStreamState
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from proxy.tests.test_translate_responses_to_chat_request import FUNCTION_TOOL
from proxy.tests.test_translate_responses_to_chat_response import (
    CHAT_USAGE,
    REQUEST,
    RESPONSES_USAGE,
    chat_answer,
    envelope,
    text_message,
    to_responses,
)
from proxy.translate.responses_to_chat.stream import ChatToResponsesStream

STREAM_EVENT = TypeAdapter(ResponseStreamEvent)


def chunk(delta: dict[str, Any] | None = None, finish_reason: str | None = None, **extra: Any) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 5, "choices": choices, **extra}


def run_stream(chunks: list[dict[str, Any]], request: dict[str, Any] = REQUEST) -> tuple[list[dict[str, Any]], Any]:
    """Every event, after checking each against the SDK's types and feeding
    them through the SDK's own accumulator; also that accumulator."""
    translator = ChatToResponsesStream(model="gpt-5", response_id="resp_abc", created_at=5, request=request)
    events = [event for c in chunks for event in translator.feed(c)] + translator.close()
    state: Any = ResponseStreamState(input_tools=omit, text_format=omit)
    for event in events:
        state.handle_event(STREAM_EVENT.validate_python(event))
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    assert translator.close() == [] and translator.feed(chunk({"content": "late"})) == []
    return events, state


def in_progress(sequence_number: int, kind: str) -> dict[str, Any]:
    return {"type": kind, "sequence_number": sequence_number, "response": envelope("in_progress", [], usage=None)}


def test_a_text_stream_becomes_the_exact_responses_events() -> None:
    events, state = run_stream(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hel"}),
            chunk({"content": "lo"}),
            chunk({}, "stop"),
            chunk(usage=CHAT_USAGE),
        ]
    )
    ref = {"item_id": "msg_abc_0", "output_index": 0, "content_index": 0}
    assert events == [
        in_progress(0, "response.created"),
        in_progress(1, "response.in_progress"),
        {
            "type": "response.output_item.added",
            "sequence_number": 2,
            "output_index": 0,
            "item": text_message("msg_abc_0", "", "in_progress") | {"content": []},
        },
        {
            "type": "response.content_part.added",
            "sequence_number": 3,
            **ref,
            "part": {"type": "output_text", "text": "", "annotations": []},
        },
        {"type": "response.output_text.delta", "sequence_number": 4, **ref, "delta": "Hel", "logprobs": []},
        {"type": "response.output_text.delta", "sequence_number": 5, **ref, "delta": "lo", "logprobs": []},
        {"type": "response.output_text.done", "sequence_number": 6, **ref, "text": "Hello", "logprobs": []},
        {
            "type": "response.content_part.done",
            "sequence_number": 7,
            **ref,
            "part": {"type": "output_text", "text": "Hello", "annotations": []},
        },
        {
            "type": "response.output_item.done",
            "sequence_number": 8,
            "output_index": 0,
            "item": text_message("msg_abc_0", "Hello"),
        },
        {
            "type": "response.completed",
            "sequence_number": 9,
            "response": envelope("completed", [text_message("msg_abc_0", "Hello")]),
        },
    ]
    assert state._completed_response.output_text == "Hello"


def test_a_stream_with_reasoning_text_and_calls_ends_as_the_non_streamed_answer_would() -> None:
    calls = [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": ""}},
        {"index": 1, "id": "call_2", "type": "function", "function": {"name": "lookup", "arguments": '{"q":'}},
    ]
    events, state = run_stream(
        [
            chunk({"role": "assistant", "reasoning_content": "Thi"}),
            chunk({"reasoning_content": "nk."}),
            chunk({"content": "Let me look."}),
            chunk({"tool_calls": [calls[0]]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"q":"x"}'}}]}),
            chunk({"tool_calls": [calls[1]]}),
            chunk({"tool_calls": [{"index": 1, "function": {"arguments": '"y"}'}}]}),
            chunk({}, "tool_calls"),
            chunk(usage=CHAT_USAGE),
        ]
    )
    whole_calls = [
        {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q":"x"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "lookup", "arguments": '{"q":"y"}'}},
    ]
    whole = {"content": "Let me look.", "reasoning_content": "Think.", "tool_calls": whole_calls}
    assert events[-1] == {
        "type": "response.completed",
        "sequence_number": len(events) - 1,
        "response": to_responses(chat_answer(whole, "tool_calls")),
    }
    assert [event["type"] for event in events[2:-1]] == [
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.function_call_arguments.done",
        "response.output_item.done",
    ]
    final = state._completed_response
    assert [(call.name, call.arguments) for call in final.output if call.type == "function_call"] == [
        ("lookup", '{"q":"x"}'),
        ("lookup", '{"q":"y"}'),
    ]


def test_a_stream_cut_at_the_token_limit_ends_incomplete() -> None:
    events, _ = run_stream([chunk({"content": "Half"}), chunk({}, "length"), chunk(usage=CHAT_USAGE)])
    assert events[-1] == {
        "type": "response.incomplete",
        "sequence_number": len(events) - 1,
        "response": envelope(
            "incomplete",
            [text_message("msg_abc_0", "Half", status="incomplete")],
            incomplete_details={"reason": "max_output_tokens"},
        ),
    }


def test_usage_in_the_finish_chunk_completes_at_once() -> None:
    translator = ChatToResponsesStream(model="gpt-5", response_id="resp_abc", created_at=5, request=REQUEST)
    events = translator.feed(chunk({"content": "Hi"}, "stop", usage=CHAT_USAGE))
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["usage"] == RESPONSES_USAGE
    assert translator.close() == []


def test_a_finished_stream_without_usage_completes_on_close() -> None:
    events, state = run_stream([chunk({"content": "Hi"}), chunk({}, "stop")])
    assert events[-1] == {
        "type": "response.completed",
        "sequence_number": len(events) - 1,
        "response": envelope("completed", [text_message("msg_abc_0", "Hi")], usage=None),
    }
    assert state._completed_response.output_text == "Hi"


def test_a_stream_without_text_or_calls_still_has_an_empty_message() -> None:
    events, _ = run_stream([chunk({"role": "assistant", "content": ""}), chunk({}, "stop"), chunk(usage=CHAT_USAGE)])
    assert events[-1]["response"]["output"] == [text_message("msg_abc_0", "")]


def test_a_broken_stream_fails_and_marks_open_items_incomplete() -> None:
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q'}}
    events, state = run_stream([chunk({"content": "Hi"}), chunk({"tool_calls": [call]})])
    assert events[-1] == {
        "type": "response.failed",
        "sequence_number": len(events) - 1,
        "response": envelope(
            "failed",
            [
                text_message("msg_abc_0", "Hi"),
                {
                    "type": "function_call",
                    "id": "fc_abc_1",
                    "call_id": "call_1",
                    "name": "lookup",
                    "arguments": '{"q',
                    "status": "incomplete",
                },
            ],
            usage=None,
            error={"code": "server_error", "message": "The upstream stream ended before the answer was complete."},
        ),
    }
    assert state._completed_response is None  # the SDK's get_final_response() raises, as for any failed response


def test_an_error_chunk_fails_the_response_with_its_message() -> None:
    events, _ = run_stream([chunk({"content": "Hi"}), {"error": {"message": "overloaded"}}])
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"] == {"code": "server_error", "message": "overloaded"}


def test_an_empty_upstream_stream_still_opens_and_fails_the_response() -> None:
    events, _ = run_stream([])
    assert [event["type"] for event in events] == ["response.created", "response.in_progress", "response.failed"]


def test_a_refusal_streams_as_refusal_events() -> None:
    events, _ = run_stream([chunk({"refusal": "No."}), chunk({}, "stop"), chunk(usage=CHAT_USAGE)])
    assert [event["type"] for event in events[2:-1]] == [
        "response.output_item.added",
        "response.content_part.added",
        "response.refusal.delta",
        "response.refusal.done",
        "response.content_part.done",
        "response.output_item.done",
    ]
    assert events[-1]["response"]["output"][0]["content"] == [{"type": "refusal", "refusal": "No."}]


def test_the_openai_sdk_streams_the_translated_events_to_a_final_response() -> None:
    calls = [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]
    events, _ = run_stream(
        [chunk({"content": "Looking."}), chunk({"tool_calls": calls}), chunk({}, "tool_calls"), chunk(usage=CHAT_USAGE)]
    )
    sse = b"".join(b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events)

    def serve(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=sse)

    http = httpx2.Client(transport=httpx2.MockTransport(serve))
    client = openai.OpenAI(api_key="k", base_url="http://gateway.test/v1", http_client=http)
    with client.responses.stream(model="gpt-5", input="Hi", tools=[FUNCTION_TOOL]) as stream:
        final = stream.get_final_response()
    assert final.output_text == "Looking."
    assert final.usage is not None and final.usage.total_tokens == 17
    assert [(item.type, getattr(item, "call_id", None)) for item in final.output] == [
        ("message", None),
        ("function_call", "call_1"),
    ]
