"""Chat-completions requests for Anthropic upstreams (proxy.translate.chat_to_messages.request, pure)."""

from typing import Any

import pytest

from proxy.translate import TranslationError
from proxy.translate.chat_to_messages.request import chat_request_to_messages

DEFAULT_MAX = 4096


HI = [{"role": "user", "content": "hi"}]


def translate(**body: Any) -> tuple[dict[str, Any], list[str]]:
    translated = chat_request_to_messages(
        {"model": "gpt-public", **body}, upstream_model="claude-up", default_max_tokens=DEFAULT_MAX
    )
    return translated.body, translated.notes


def translated_messages(*messages: dict[str, Any]) -> list[dict[str, Any]]:
    return translate(messages=list(messages))[0]["messages"]


def test_a_minimal_request_gets_the_upstream_model_and_the_default_max_tokens() -> None:
    assert translate(messages=HI) == (
        {"model": "claude-up", "messages": [{"role": "user", "content": "hi"}], "max_tokens": DEFAULT_MAX},
        [],
    )


FIELDS: list[tuple[dict[str, Any], dict[str, Any], list[str]]] = [
    ({"max_tokens": 100}, {"max_tokens": 100}, []),
    ({"max_tokens": 100, "max_completion_tokens": 200}, {"max_tokens": 200}, []),
    ({"stop": "END"}, {"stop_sequences": ["END"]}, []),
    ({"stop": ["a", "b"]}, {"stop_sequences": ["a", "b"]}, []),
    ({"temperature": 0.3}, {"temperature": 0.3}, []),
    ({"temperature": 1.5}, {"temperature": 1}, ["clamped: temperature 1.5 -> 1"]),
    ({"top_p": 0.9}, {"top_p": 0.9}, []),
    ({"top_p": 1}, {}, []),
    ({"top_k": 40}, {"top_k": 40}, []),
    ({"user": "u-1"}, {"metadata": {"user_id": "u-1"}}, []),
    ({"stream": True, "stream_options": {"include_usage": True}}, {"stream": True}, []),
    ({"n": 1}, {}, []),
    ({"response_format": {"type": "text"}}, {}, []),
    ({"response_format": {"type": "json_object"}}, {}, ["dropped: response_format=json_object"]),
    ({"response_format": {"type": "json_schema", "json_schema": {}}}, {}, ["dropped: response_format=json_schema"]),
    ({"logprobs": True, "top_logprobs": 3}, {}, ["dropped: logprobs", "dropped: top_logprobs"]),
    (
        {"presence_penalty": 0.5, "frequency_penalty": 0.2},
        {},
        ["dropped: presence_penalty", "dropped: frequency_penalty"],
    ),
    ({"seed": 7, "logit_bias": {"50256": -100}}, {}, ["dropped: seed", "dropped: logit_bias"]),
    ({"presence_penalty": 0, "logprobs": False, "seed": None, "logit_bias": {}}, {}, []),
    ({"store": True, "metadata": {"a": "b"}}, {}, ["dropped: store", "dropped: metadata"]),
    ({"tool_choice": "auto"}, {}, ["dropped: tool_choice (no tools)"]),
    ({"parallel_tool_calls": False}, {}, []),
    ({"reasoning_effort": "none"}, {}, []),
    (
        {"reasoning_effort": "low"},
        {"thinking": {"type": "enabled", "budget_tokens": 1024}},
        ["mapped: reasoning_effort=low -> thinking.budget_tokens=1024"],
    ),
    (
        {"reasoning_effort": "medium"},
        {"thinking": {"type": "enabled", "budget_tokens": 4096}, "max_tokens": DEFAULT_MAX + 4096},
        ["mapped: reasoning_effort=medium -> thinking.budget_tokens=4096"],
    ),
    (
        {"reasoning_effort": "high"},
        {"thinking": {"type": "enabled", "budget_tokens": 16384}, "max_tokens": DEFAULT_MAX + 16384},
        ["mapped: reasoning_effort=high -> thinking.budget_tokens=16384"],
    ),
    (
        {"reasoning_effort": "high", "max_completion_tokens": 2000},
        {"thinking": {"type": "enabled", "budget_tokens": 1999}, "max_tokens": 2000},
        ["mapped: reasoning_effort=high -> thinking.budget_tokens=1999"],
    ),
    (
        {"reasoning_effort": "low", "max_tokens": 500},
        {"max_tokens": 500},
        ["dropped: reasoning_effort=low (max_tokens too small for thinking)"],
    ),
    (
        {"reasoning_effort": "low", "temperature": 0.2, "top_p": 0.5, "top_k": 5},
        {"thinking": {"type": "enabled", "budget_tokens": 1024}},
        [
            "mapped: reasoning_effort=low -> thinking.budget_tokens=1024",
            "dropped: temperature (thinking needs the default)",
            "dropped: top_p (thinking needs 0.95 or more)",
            "dropped: top_k (thinking forbids it)",
        ],
    ),
    (
        {"reasoning_effort": "low", "temperature": 1, "top_p": 0.96},
        {"thinking": {"type": "enabled", "budget_tokens": 1024}, "temperature": 1, "top_p": 0.96},
        ["mapped: reasoning_effort=low -> thinking.budget_tokens=1024"],
    ),
]


@pytest.mark.parametrize(("fields", "expected", "notes"), FIELDS)
def test_each_chat_field_maps_to_its_messages_field_or_a_note(
    fields: dict[str, Any], expected: dict[str, Any], notes: list[str]
) -> None:
    base = {"model": "claude-up", "messages": [{"role": "user", "content": "hi"}], "max_tokens": DEFAULT_MAX}
    assert translate(messages=HI, **fields) == ({**base, **expected}, notes)


@pytest.mark.parametrize(
    ("fields", "message", "param"),
    [
        ({"n": 2}, "n > 1 is not supported by Anthropic models: send n separate requests", "n"),
        (
            {"reasoning_effort": "extreme"},
            "reasoning_effort 'extreme' is not one of minimal, low, medium, high",
            "reasoning_effort",
        ),
        ({"messages": []}, "messages must be a non-empty list", "messages"),
        ({"messages": "hi"}, "messages must be a non-empty list", "messages"),
        (
            {"messages": [{"role": "function", "content": "x"}]},
            "messages[0].role 'function' is not supported",
            "messages[0].role",
        ),
        (
            {"tools": [{"type": "custom", "custom": {"name": "x"}}]},
            "tools[0] must be a function tool with a name",
            "tools[0]",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "allowed_tools"}},
            "tool_choice must be auto, required, none or a function",
            "tool_choice",
        ),
    ],
)
def test_what_anthropic_cannot_express_is_a_translation_error(fields: dict[str, Any], message: str, param: str) -> None:
    with pytest.raises(TranslationError) as caught:
        translate(**{"messages": HI, **fields})
    assert (str(caught.value), caught.value.param) == (message, param)


# --- request: messages ----------------------------------------------------------------


def test_system_and_developer_messages_become_one_system_string() -> None:
    body, notes = translate(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
            *HI,
        ]
    )
    assert body["system"] == "Be brief.\n\nUse French."
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert notes == []


def test_a_system_part_with_cache_control_keeps_the_system_as_blocks() -> None:
    cached = {"type": "text", "text": "Long rules", "cache_control": {"type": "ephemeral"}}
    body, _ = translate(messages=[{"role": "system", "content": [{"type": "text", "text": "intro"}, cached]}, *HI])
    assert body["system"] == [{"type": "text", "text": "intro"}, cached]


def test_a_system_message_inside_the_conversation_moves_to_system_with_a_note() -> None:
    body, notes = translate(messages=[*HI, {"role": "system", "content": "Now be formal."}])
    assert body["system"] == "Now be formal."
    assert notes == ["moved: system message inside the conversation -> system"]


def test_text_and_image_parts_become_anthropic_blocks() -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "auto"}},
        {"type": "text", "text": ""},
    ]
    assert translated_messages({"role": "user", "content": content}) == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
            ],
        }
    ]


def test_a_pdf_file_part_becomes_a_document_block() -> None:
    part = {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0"}}
    assert translated_messages({"role": "user", "content": [part]}) == [
        {
            "role": "user",
            "content": [
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0"}},
            ],
        }
    ]


@pytest.mark.parametrize(
    ("part", "message"),
    [
        (
            {"type": "image_url", "image_url": {"url": "ftp://example.com/a.png"}},
            "messages[0].content[0] must be an http(s) URL or a base64 data URL",
        ),
        (
            {"type": "image_url", "image_url": {"url": "data:image/png,rawbytes"}},
            "messages[0].content[0] must be an http(s) URL or a base64 data URL",
        ),
        (
            {"type": "file", "file": {"file_id": "file-123"}},
            "messages[0].content[0] must be a base64 data URL of a PDF",
        ),
        (
            {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}},
            "messages[0].content[0].type 'input_audio' is not supported by Anthropic models",
        ),
    ],
)
def test_content_anthropic_cannot_take_is_a_translation_error(part: dict[str, Any], message: str) -> None:
    with pytest.raises(TranslationError) as caught:
        translated_messages({"role": "user", "content": [part]})
    assert (str(caught.value), caught.value.param) == (message, "messages[0].content[0]")


def test_assistant_tool_calls_become_tool_use_blocks_after_its_text() -> None:
    assistant = {
        "role": "assistant",
        "content": "Let me look.",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "cats"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "now", "arguments": ""}},
        ],
    }
    assert translated_messages(*HI, assistant)[1] == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "call_1", "name": "lookup", "input": {"q": "cats"}},
            {"type": "tool_use", "id": "call_2", "name": "now", "input": {}},
        ],
    }


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ('{"q": ', "messages[1].tool_calls[0].function.arguments is not valid JSON"),
        ("[1, 2]", "messages[1].tool_calls[0].function.arguments is not a JSON object"),
    ],
)
def test_tool_call_arguments_that_are_no_json_object_are_a_translation_error(arguments: str, message: str) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": arguments}}
    with pytest.raises(TranslationError) as caught:
        translated_messages(*HI, {"role": "assistant", "content": None, "tool_calls": [call]})
    assert (str(caught.value), caught.value.param) == (message, "messages[1].tool_calls[0]")


def test_consecutive_tool_results_and_the_next_user_message_merge_into_one_user_turn() -> None:
    calls = [{"id": f"call_{i}", "type": "function", "function": {"name": "f", "arguments": "{}"}} for i in (1, 2)]
    assert translated_messages(
        *HI,
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "tool_call_id": "call_1", "content": "one"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "two"}]},
        {"role": "user", "content": "thanks"},
    )[2:] == [
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "one"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "two"}]},
                {"type": "text", "text": "thanks"},
            ],
        }
    ]


def test_consecutive_messages_of_one_role_merge_because_anthropic_needs_alternation() -> None:
    assert translated_messages(*HI, {"role": "user", "content": "there"}) == [
        {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "there"}]}
    ]


def test_message_fields_without_an_equivalent_are_noted_once() -> None:
    _, notes = translate(
        messages=[
            {"role": "user", "content": "a", "name": "ann"},
            {"role": "assistant", "content": "b", "refusal": None},
            {"role": "user", "content": "c", "name": "bob"},
        ]
    )
    assert notes == ["dropped: messages[].name"]


# --- request: tools ---------------------------------------------------------------------

LOOKUP = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Find things",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    },
}
NOW = {"type": "function", "function": {"name": "now"}}


def test_function_tools_become_anthropic_tools_with_an_input_schema() -> None:
    body, notes = translate(messages=HI, tools=[LOOKUP, NOW])
    assert body["tools"] == [
        {
            "name": "lookup",
            "description": "Find things",
            "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
        },
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in body and notes == []


def test_a_strict_tool_is_sent_without_strictness_and_noted() -> None:
    strict = {"type": "function", "function": {**NOW["function"], "strict": True}}  # type: ignore[dict-item]
    assert translate(messages=HI, tools=[strict])[1] == ["dropped: tools[].function.strict"]


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        ({"type": "function", "function": {"name": "lookup"}}, None, {"type": "tool", "name": "lookup"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (
            {"type": "function", "function": {"name": "lookup"}},
            False,
            {"type": "tool", "name": "lookup", "disable_parallel_tool_use": True},
        ),
        ("none", False, {"type": "none"}),
        ("auto", True, {"type": "auto"}),
    ],
)
def test_tool_choice_and_parallel_tool_calls_map_to_anthropics_tool_choice(
    choice: Any, parallel: bool | None, expected: dict[str, Any]
) -> None:
    body, notes = translate(messages=HI, tools=[LOOKUP], tool_choice=choice, parallel_tool_calls=parallel)
    assert body["tool_choice"] == expected and notes == []
