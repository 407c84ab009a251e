"""OpenAI Responses API requests as chat completions (proxy.translate.responses_to_chat.request)."""

from typing import Any

import pytest

from proxy.translate import TranslationError
from proxy.translate.responses_to_chat.request import responses_request_to_chat

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
