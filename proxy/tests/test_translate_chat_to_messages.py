"""Chat-completions clients on Anthropic upstreams: requests, answers, streams (pure)."""

from typing import Any

import pytest

from proxy.translate import TranslationError
from proxy.translate.chat_to_messages import (
    MessagesToChatStream,
    chat_request_to_messages,
    message_response_to_chat,
)

DEFAULT_MAX = 4096
HI = [{"role": "user", "content": "hi"}]


def translate(**body: Any) -> tuple[dict[str, Any], list[str]]:
    translated = chat_request_to_messages(
        {"model": "gpt-public", **body}, upstream_model="claude-up", default_max_tokens=DEFAULT_MAX
    )
    return translated.body, translated.notes


def translated_messages(*messages: dict[str, Any]) -> list[dict[str, Any]]:
    return translate(messages=list(messages))[0]["messages"]


# --- request: top-level fields -----------------------------------------------------


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


# --- response ------------------------------------------------------------------------------


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


# --- stream --------------------------------------------------------------------------------------

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
