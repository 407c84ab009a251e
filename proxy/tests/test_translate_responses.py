"""OpenAI Responses API (client) <-> OpenAI chat completions (upstream)."""

from typing import Any

import httpx2
import openai
import orjson
import pytest
from openai._types import omit
from openai.lib.streaming.responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from proxy.translate import TranslationError
from proxy.translate.responses import ChatToResponsesStream, chat_response_to_responses, responses_request_to_chat

STREAM_EVENT = TypeAdapter(ResponseStreamEvent)
HI = [{"role": "user", "content": "Hi"}]
FUNCTION_TOOL = {"type": "function", "name": "lookup", "description": "Find", "parameters": {"type": "object"}}
CHAT_TOOL = {
    "type": "function",
    "function": {"name": "lookup", "description": "Find", "parameters": {"type": "object"}},
}
SCHEMA = {"type": "object", "properties": {"a": {"type": "string"}}}


def translate(**fields: Any) -> tuple[dict[str, Any], list[str]]:
    translated = responses_request_to_chat({"model": "gpt-5", "input": "Hi", **fields}, upstream_model="up-model")
    return translated.body, translated.notes


# (fields added to the Responses request, fields added to the chat request, notes)
FIELD_CASES: list[tuple[str, dict[str, Any], dict[str, Any], list[str]]] = [
    ("nothing extra", {}, {}, []),
    ("temperature passes", {"temperature": 0.5}, {"temperature": 0.5}, []),
    ("top_p passes", {"top_p": 0.9}, {"top_p": 0.9}, []),
    ("user passes", {"user": "u-1"}, {"user": "u-1"}, []),
    ("max_output_tokens becomes max_tokens", {"max_output_tokens": 100}, {"max_tokens": 100}, []),
    ("reasoning effort maps", {"reasoning": {"effort": "high", "summary": "auto"}}, {"reasoning_effort": "high"}, []),
    ("stream asks for usage", {"stream": True}, {"stream": True, "stream_options": {"include_usage": True}}, []),
    ("stream false adds nothing", {"stream": False}, {}, []),
    (
        "a json_schema format becomes response_format",
        {"text": {"format": {"type": "json_schema", "name": "x", "schema": SCHEMA, "strict": True}}},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA, "strict": True}}},
        [],
    ),
    (
        "json_object maps",
        {"text": {"format": {"type": "json_object"}}},
        {"response_format": {"type": "json_object"}},
        [],
    ),
    ("a text format adds nothing", {"text": {"format": {"type": "text"}}}, {}, []),
    ("verbosity is dropped", {"text": {"verbosity": "low"}}, {}, ["dropped: text.verbosity"]),
    ("metadata is dropped", {"metadata": {"a": "b"}}, {}, ["dropped: metadata"]),
    ("store is the gateway's, not the upstream's", {"store": True}, {}, []),
    ("store false says nothing", {"store": False}, {}, []),
    ("include is dropped", {"include": ["reasoning.encrypted_content"]}, {}, ["dropped: include"]),
    ("truncation is dropped", {"truncation": "auto"}, {}, ["dropped: truncation"]),
    ("background is dropped", {"background": True}, {}, ["dropped: background"]),
    ("service_tier is dropped", {"service_tier": "flex"}, {}, ["dropped: service_tier"]),
    ("prompt_cache_key is dropped", {"prompt_cache_key": "k"}, {}, ["dropped: prompt_cache_key"]),
    ("safety_identifier is dropped", {"safety_identifier": "s"}, {}, ["dropped: safety_identifier"]),
    ("an unknown field is dropped", {"frobnicate": 1}, {}, ["dropped: frobnicate"]),
    ("a null previous_response_id is absent", {"previous_response_id": None}, {}, []),
    ("a function tool flattens into chat form", {"tools": [FUNCTION_TOOL]}, {"tools": [CHAT_TOOL]}, []),
    (
        "strict passes with the function",
        {"tools": [{"type": "function", "name": "f", "parameters": SCHEMA, "strict": True}]},
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": SCHEMA, "strict": True}}]},
        [],
    ),
    (
        "hosted tools are dropped one note each",
        {
            "tools": [
                {"type": "web_search"},
                FUNCTION_TOOL,
                {"type": "file_search", "vector_store_ids": ["v"]},
                {"type": "computer_use_preview", "display_width": 1, "display_height": 1, "environment": "linux"},
                {"type": "code_interpreter", "container": {"type": "auto"}},
                {"type": "mcp", "server_label": "a", "server_url": "https://a"},
                {"type": "mcp", "server_label": "b", "server_url": "https://b"},
            ]
        },
        {"tools": [CHAT_TOOL]},
        [
            "dropped: tools.web_search",
            "dropped: tools.file_search",
            "dropped: tools.computer_use_preview",
            "dropped: tools.code_interpreter",
            "dropped: tools.mcp",
        ],
    ),
    (
        "tool_choice required passes",
        {"tools": [FUNCTION_TOOL], "tool_choice": "required"},
        {"tools": [CHAT_TOOL], "tool_choice": "required"},
        [],
    ),
    (
        "a named function tool_choice nests",
        {"tools": [FUNCTION_TOOL], "tool_choice": {"type": "function", "name": "lookup"}},
        {"tools": [CHAT_TOOL], "tool_choice": {"type": "function", "function": {"name": "lookup"}}},
        [],
    ),
    (
        "allowed_tools becomes its mode",
        {"tools": [FUNCTION_TOOL], "tool_choice": {"type": "allowed_tools", "mode": "required", "tools": []}},
        {"tools": [CHAT_TOOL], "tool_choice": "required"},
        ["mapped: tool_choice.allowed_tools -> required"],
    ),
    (
        "a hosted tool_choice is dropped",
        {"tools": [FUNCTION_TOOL], "tool_choice": {"type": "web_search_preview"}},
        {"tools": [CHAT_TOOL]},
        ["dropped: tool_choice.web_search_preview"],
    ),
    (
        "parallel_tool_calls passes with tools",
        {"tools": [FUNCTION_TOOL], "parallel_tool_calls": False},
        {"tools": [CHAT_TOOL], "parallel_tool_calls": False},
        [],
    ),
    (
        "tool_choice and parallel_tool_calls go when no tool is left",
        {"tools": [{"type": "web_search"}], "tool_choice": "auto", "parallel_tool_calls": True},
        {},
        ["dropped: tools.web_search", "dropped: tool_choice", "dropped: parallel_tool_calls"],
    ),
]


@pytest.mark.parametrize(("fields", "added", "notes"), [c[1:] for c in FIELD_CASES], ids=[c[0] for c in FIELD_CASES])
def test_each_request_field_is_passed_mapped_or_dropped_with_a_note(
    fields: dict[str, Any], added: dict[str, Any], notes: list[str]
) -> None:
    assert translate(**fields) == ({"model": "up-model", "messages": HI, **added}, notes)


def test_instructions_lead_as_a_system_message() -> None:
    body, _ = translate(instructions="Be brief.")
    assert body["messages"] == [{"role": "system", "content": "Be brief."}, *HI]


def test_message_items_of_every_role_become_chat_messages() -> None:
    items = [
        {"role": "developer", "content": "Rules."},
        {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "More rules."}]},
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "What is"},
                {"type": "input_image", "image_url": "https://x/a.png", "detail": "low"},
            ],
        },
        {
            "type": "message",
            "id": "msg_1",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "A cat.", "annotations": []}],
        },
        {"role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]},
    ]
    body, notes = translate(input=items)
    assert body["messages"] == [
        {"role": "system", "content": "Rules."},
        {"role": "system", "content": "More rules."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is"},
                {"type": "image_url", "image_url": {"url": "https://x/a.png", "detail": "low"}},
            ],
        },
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": "a\n\nb"},
    ]
    assert notes == []


def test_function_calls_join_the_assistant_turn_and_outputs_become_tool_messages() -> None:
    items = [
        {"role": "user", "content": "Weather in Oslo and Rome?"},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
        {"type": "function_call", "id": "fc_1", "call_id": "c1", "name": "weather", "arguments": '{"city":"Oslo"}'},
        {"type": "function_call", "call_id": "c2", "name": "weather", "arguments": '{"city":"Rome"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "3C"},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "20C"}]},
        {"type": "function_call", "call_id": "c3", "name": "weather", "arguments": ""},
    ]
    body, notes = translate(input=items)
    assert body["messages"] == [
        {"role": "user", "content": "Weather in Oslo and Rome?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Oslo"}'}},
                {"id": "c2", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Rome"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "3C"},
        {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "20C"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c3", "type": "function", "function": {"name": "weather", "arguments": "{}"}}],
        },
    ]
    assert notes == ["dropped: input reasoning items"]


def test_an_inline_file_becomes_a_file_part() -> None:
    part = {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBER"}
    body, _ = translate(input=[{"role": "user", "content": [part]}])
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "file", "file": {"file_data": part["file_data"], "filename": "a.pdf"}}]}
    ]


ERROR_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("previous_response_id needs server state", {"previous_response_id": "resp_1"}, "previous_response_id"),
    ("conversation needs server state", {"conversation": "conv_1"}, "conversation"),
    ("a stored prompt needs server state", {"prompt": {"id": "pmpt_1"}}, "prompt"),
    ("input must be a string or a list", {"input": 3}, "input"),
    ("an item must be an object", {"input": ["Hi"]}, "input[0]"),
    ("an unknown role", {"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
    ("an item reference needs server state", {"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
    (
        "an image by file_id cannot be resolved",
        {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}]},
        "input[0].content[0]",
    ),
    (
        "a file by file_id cannot be resolved",
        {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file_1"}]}]},
        "input[0].content[0]",
    ),
    ("a function call needs a call_id", {"input": [{"type": "function_call", "name": "f"}]}, "input[0].call_id"),
    (
        "a tool output image has no chat form",
        {
            "input": [
                {"type": "function_call_output", "call_id": "c", "output": [{"type": "input_image", "image_url": "u"}]}
            ]
        },
        "input[0].output",
    ),
    ("a function tool needs a name", {"tools": [{"type": "function"}]}, "tools[0].name"),
    ("an unknown text format", {"text": {"format": {"type": "grammar"}}}, "text.format"),
]


@pytest.mark.parametrize(("fields", "param"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_requests_chat_cannot_express_are_refused_naming_the_param(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(TranslationError) as caught:
        translate(**fields)
    assert caught.value.param == param


def test_the_state_error_tells_the_client_to_send_the_full_input() -> None:
    with pytest.raises(TranslationError, match="server-side conversation state is unavailable; send the full input"):
        translate(previous_response_id="resp_1")


# --- non-streamed answers -------------------------------------------------

REQUEST = {
    "model": "gpt-5",
    "input": "Hi",
    "instructions": "Be brief.",
    "tools": [FUNCTION_TOOL, {"type": "web_search"}],
}
CHAT_USAGE = {
    "prompt_tokens": 10,
    "completion_tokens": 7,
    "total_tokens": 17,
    "prompt_tokens_details": {"cached_tokens": 4},
    "completion_tokens_details": {"reasoning_tokens": 2},
}
RESPONSES_USAGE = {
    "input_tokens": 10,
    "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
    "output_tokens": 7,
    "output_tokens_details": {"reasoning_tokens": 2},
    "total_tokens": 17,
}


def chat_answer(message: dict[str, Any], finish_reason: str = "stop", usage: Any = CHAT_USAGE) -> dict[str, Any]:
    choice = {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish_reason}
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 5, "choices": [choice], "usage": usage}


def to_responses(data: dict[str, Any], request: dict[str, Any] = REQUEST) -> dict[str, Any]:
    return chat_response_to_responses(data, model="gpt-5", response_id="resp_abc", created_at=5, request=request)


def envelope(status: str, output: list[dict[str, Any]], usage: Any = RESPONSES_USAGE, **extra: Any) -> dict[str, Any]:
    return {
        "id": "resp_abc",
        "object": "response",
        "created_at": 5,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": "Be brief.",
        "max_output_tokens": None,
        "model": "gpt-5",
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": None,
        "temperature": None,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [FUNCTION_TOOL],
        "top_p": None,
        "user": None,
        "metadata": {},
        "usage": usage,
        **extra,
    }


def text_message(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": []}]
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def test_an_answer_becomes_reasoning_message_and_function_call_items() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q":"x"}'}}
    answer = chat_answer({"content": "Let me look.", "reasoning_content": "Think.", "tool_calls": [call]}, "tool_calls")
    response = to_responses(answer)
    assert response == envelope(
        "completed",
        [
            {"type": "reasoning", "id": "rs_abc_0", "summary": [{"type": "summary_text", "text": "Think."}]},
            text_message("msg_abc_1", "Let me look."),
            {
                "type": "function_call",
                "id": "fc_abc_2",
                "call_id": "call_1",
                "name": "lookup",
                "arguments": '{"q":"x"}',
                "status": "completed",
            },
        ],
    )
    assert Response.model_validate(response).output_text == "Let me look."


def test_a_call_without_text_has_no_message_item() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    response = to_responses(chat_answer({"content": None, "tool_calls": [call]}, "tool_calls"))
    assert [item["type"] for item in response["output"]] == ["function_call"]
    Response.model_validate(response)


def test_an_empty_answer_still_has_its_empty_message() -> None:
    response = to_responses(chat_answer({"content": ""}, usage=None))
    assert response == envelope("completed", [text_message("msg_abc_0", "")], usage=None)
    assert Response.model_validate(response).output_text == ""


def test_an_answer_cut_at_the_token_limit_is_incomplete() -> None:
    request = {**REQUEST, "max_output_tokens": 7, "temperature": 0.2, "text": {"format": {"type": "json_object"}}}
    response = to_responses(chat_answer({"content": "Half"}, "length"), request)
    assert response == envelope(
        "incomplete",
        [text_message("msg_abc_0", "Half", status="incomplete")],
        incomplete_details={"reason": "max_output_tokens"},
        max_output_tokens=7,
        temperature=0.2,
        text={"format": {"type": "json_object"}},
    )
    Response.model_validate(response)


def test_a_refusal_becomes_a_refusal_part() -> None:
    response = to_responses(chat_answer({"content": None, "refusal": "No."}))
    assert response["output"] == [
        {
            "type": "message",
            "id": "msg_abc_0",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "refusal", "refusal": "No."}],
        }
    ]
    Response.model_validate(response)


def test_cache_writes_reported_by_the_upstream_reach_the_usage() -> None:
    usage = {"prompt_tokens": 10, "completion_tokens": 1, "prompt_tokens_details": {"cache_write_tokens": 6}}
    response = to_responses(chat_answer({"content": "x"}, usage=usage))
    assert response["usage"] == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 6},
        "output_tokens": 1,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 11,
    }


# --- streams --------------------------------------------------------------


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
