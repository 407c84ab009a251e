"""Anthropic Messages (client) <-> OpenAI chat completions (upstream)."""

import hashlib
from typing import Any

import anthropic
import httpx2
import orjson
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from pydantic import TypeAdapter

from proxy.translate import TranslationError
from proxy.translate.messages_to_chat import (
    ChatToMessagesStream,
    chat_response_to_message,
    count_tokens_estimate,
    messages_request_to_chat,
)

HI = [{"role": "user", "content": "Hi"}]
EPHEMERAL = {"type": "ephemeral"}
PNG = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
PNG_PART = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
LONG_USER_ID = "user_" + "a" * 64 + "_account__session_1b2c3d4e-0000-4000-8000-000000000000"
STREAM_EVENT = TypeAdapter(RawMessageStreamEvent)


def translate(**fields: Any) -> tuple[dict[str, Any], list[str]]:
    body = {"model": "claude-sonnet-4-5-20250929", "messages": HI, **fields}
    translated = messages_request_to_chat(body, upstream_model="gpt-4.1")
    return translated.body, translated.notes


# (fragment of the Anthropic request, fragment of the chat request it must produce, notes)
REQUEST_CASES: list[tuple[str, dict[str, Any], dict[str, Any], list[str]]] = [
    ("model becomes the upstream model", {}, {"model": "gpt-4.1", "messages": [{"role": "user", "content": "Hi"}]}, []),
    (
        "a system string leads",
        {"system": "Be brief."},
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]},
        [],
    ),
    (
        "system blocks join and lose cache_control",
        {"system": [{"type": "text", "text": "A"}, {"type": "text", "text": "B", "cache_control": EPHEMERAL}]},
        {"messages": [{"role": "system", "content": "A\n\nB"}, {"role": "user", "content": "Hi"}]},
        ["dropped: cache_control"],
    ),
    (
        "a system entry in messages joins the leading system message",
        {"system": "A", "messages": [{"role": "system", "content": "B"}, *HI]},
        {"messages": [{"role": "system", "content": "A\n\nB"}, {"role": "user", "content": "Hi"}]},
        ["mapped: system entry in messages"],
    ),
    (
        "user text blocks join into one string",
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]},
        {"messages": [{"role": "user", "content": "a\n\nb"}]},
        [],
    ),
    (
        "a base64 image becomes a data URL",
        {"messages": [{"role": "user", "content": [{"type": "image", "source": PNG}, {"type": "text", "text": "?"}]}]},
        {"messages": [{"role": "user", "content": [PNG_PART, {"type": "text", "text": "?"}]}]},
        [],
    ),
    (
        "a url image keeps its url",
        {"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "https://x"}}]}]},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x"}}]}]},
        [],
    ),
    (
        "a Files API image is dropped",
        {"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file"}}]}, *HI]},
        {"messages": [{"role": "user", "content": "Hi"}]},
        ["dropped: image (file source)"],
    ),
    (
        "a base64 PDF becomes a file part",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "document",
                            "title": "a.pdf",
                            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
                        }
                    ],
                }
            ]
        },
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"}}
                    ],
                }
            ]
        },
        ["mapped: pdf document -> file part"],
    ),
    (
        "a plain-text document becomes text after its title",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "document",
                            "title": "Notes",
                            "citations": {"enabled": True},
                            "source": {"type": "text", "media_type": "text/plain", "data": "body"},
                        }
                    ],
                }
            ]
        },
        {"messages": [{"role": "user", "content": "Notes\n\nbody"}]},
        ["dropped: citations"],
    ),
    (
        "a url document is dropped",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}},
                        {"type": "text", "text": "Hi"},
                    ],
                }
            ]
        },
        {"messages": [{"role": "user", "content": "Hi"}]},
        ["dropped: document (url source)"],
    ),
    (
        "a tool_use block becomes a tool call and thinking is dropped",
        {
            "messages": [
                *HI,
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                        {"type": "redacted_thinking", "data": "xx"},
                        {"type": "text", "text": "Listing."},
                        {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}},
                    ],
                },
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "Hi"},
                {
                    "role": "assistant",
                    "content": "Listing.",
                    "tool_calls": [
                        {
                            "id": "toolu_1",
                            "type": "function",
                            "function": {"name": "Bash", "arguments": '{"command":"ls"}'},
                        }
                    ],
                },
            ]
        },
        ["dropped: thinking blocks"],
    ),
    (
        "an assistant turn of only tool calls has null content",
        {"messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]},
        {
            "messages": [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
                }
            ]
        },
        [],
    ),
    (
        "tool results become tool messages before the user's text",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Now?"},
                        {"type": "tool_result", "tool_use_id": "t1", "content": "a.txt"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "t2",
                            "is_error": True,
                            "cache_control": {"type": "ephemeral"},
                            "content": [{"type": "text", "text": "no such"}, {"type": "text", "text": "file"}],
                        },
                    ],
                }
            ]
        },
        {
            "messages": [
                {"role": "tool", "tool_call_id": "t1", "content": "a.txt"},
                {"role": "tool", "tool_call_id": "t2", "content": "Error: no such\nfile"},
                {"role": "user", "content": "Now?"},
            ]
        },
        ["dropped: cache_control"],
    ),
    (
        "an image in a tool result moves to a user message",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t1",
                            "content": [{"type": "text", "text": "shot"}, {"type": "image", "source": PNG}],
                        },
                    ],
                }
            ]
        },
        {
            "messages": [
                {"role": "tool", "tool_call_id": "t1", "content": "shot"},
                {"role": "user", "content": [PNG_PART]},
            ]
        },
        ["mapped: tool_result image -> user message"],
    ),
    (
        "tools become functions and server tools are dropped by name",
        {
            "tools": [
                {"name": "Bash", "description": "Run", "input_schema": {"type": "object"}, "cache_control": EPHEMERAL},
                {"name": "Noop"},
                {"type": "web_search_20250305", "name": "web_search"},
                {"type": "bash_20250124", "name": "bash"},
            ]
        },
        {
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "Bash", "description": "Run", "parameters": {"type": "object"}},
                },
                {"type": "function", "function": {"name": "Noop", "parameters": {"type": "object", "properties": {}}}},
            ]
        },
        ["dropped: cache_control", "dropped: server tool web_search_20250305", "dropped: server tool bash_20250124"],
    ),
    ("tool_choice auto", {"tools": [{"name": "f"}], "tool_choice": {"type": "auto"}}, {"tool_choice": "auto"}, []),
    (
        "tool_choice any is required",
        {"tools": [{"name": "f"}], "tool_choice": {"type": "any"}},
        {"tool_choice": "required"},
        [],
    ),
    ("tool_choice none", {"tools": [{"name": "f"}], "tool_choice": {"type": "none"}}, {"tool_choice": "none"}, []),
    (
        "tool_choice of one tool, without parallel calls",
        {"tools": [{"name": "f"}], "tool_choice": {"type": "tool", "name": "f", "disable_parallel_tool_use": True}},
        {"tool_choice": {"type": "function", "function": {"name": "f"}}, "parallel_tool_calls": False},
        [],
    ),
    (
        "tool_choice without tools left is dropped",
        {"tools": [{"type": "text_editor_20250728", "name": "e"}], "tool_choice": {"type": "any"}},
        {"messages": [{"role": "user", "content": "Hi"}]},
        ["dropped: server tool text_editor_20250728", "dropped: tool_choice (no tools left)"],
    ),
    (
        "generation settings pass and top_k is dropped",
        {"max_tokens": 100, "stop_sequences": ["END"], "temperature": 0.5, "top_p": 0.9, "top_k": 40},
        {"max_tokens": 100, "stop": ["END"], "temperature": 0.5, "top_p": 0.9},
        ["dropped: top_k"],
    ),
    ("a short metadata.user_id becomes user", {"metadata": {"user_id": "u1"}}, {"user": "u1"}, []),
    (
        "a long metadata.user_id becomes its digest",
        {"metadata": {"user_id": LONG_USER_ID, "other": 1}},
        {"user": hashlib.sha256(LONG_USER_ID.encode()).hexdigest()},
        ["mapped: metadata.user_id -> user (sha256)", "dropped: metadata.other"],
    ),
    ("stream asks for usage", {"stream": True}, {"stream": True, "stream_options": {"include_usage": True}}, []),
    (
        "a small thinking budget is low effort",
        {"thinking": {"type": "enabled", "budget_tokens": 4095}},
        {"reasoning_effort": "low"},
        ["mapped: thinking -> reasoning_effort=low"],
    ),
    (
        "a 4096 thinking budget is medium effort",
        {"thinking": {"type": "enabled", "budget_tokens": 4096}},
        {"reasoning_effort": "medium"},
        ["mapped: thinking -> reasoning_effort=medium"],
    ),
    (
        "a 16384 thinking budget is high effort",
        {"thinking": {"type": "enabled", "budget_tokens": 16384}},
        {"reasoning_effort": "high"},
        ["mapped: thinking -> reasoning_effort=high"],
    ),
    (
        "adaptive thinking is medium effort",
        {"thinking": {"type": "adaptive"}},
        {"reasoning_effort": "medium"},
        ["mapped: thinking -> reasoning_effort=medium"],
    ),
    (
        "Claude Code's extra fields and unknown fields are dropped by name",
        {
            "context_management": {},
            "output_config": {},
            "service_tier": "auto",
            "container": "c",
            "mcp_servers": [],
            "fancy_new_field": 1,
        },
        {"model": "gpt-4.1", "messages": [{"role": "user", "content": "Hi"}]},
        [
            "dropped: context_management",
            "dropped: output_config",
            "dropped: service_tier",
            "dropped: container",
            "dropped: mcp_servers",
            "dropped: fancy_new_field",
        ],
    ),
]


@pytest.mark.parametrize(
    ("fields", "expected", "notes"), [case[1:] for case in REQUEST_CASES], ids=[case[0] for case in REQUEST_CASES]
)
def test_each_request_field_is_mapped_or_dropped_with_a_note(
    fields: dict[str, Any], expected: dict[str, Any], notes: list[str]
) -> None:
    body, got_notes = translate(**fields)
    assert {name: body.get(name) for name in expected} == expected
    assert got_notes == notes


def test_a_plain_request_carries_nothing_extra() -> None:
    assert translate() == ({"model": "gpt-4.1", "messages": [{"role": "user", "content": "Hi"}]}, [])


def test_disabled_thinking_adds_nothing() -> None:
    assert translate(thinking={"type": "disabled"}) == translate()


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": "Hi"}, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": ["x"]}]}, "messages[0].content"),
        ({"messages": HI, "system": 5}, "system"),
        ({"messages": HI, "tools": {"name": "f"}}, "tools"),
        ({"messages": HI, "tool_choice": "auto"}, "tool_choice"),
    ],
)
def test_invalid_input_raises_a_translation_error_naming_the_param(body: dict[str, Any], param: str) -> None:
    with pytest.raises(TranslationError) as caught:
        messages_request_to_chat(body, upstream_model="m")
    assert caught.value.param == param


CLAUDE_CODE_TOOLS = [
    {
        "name": name,
        "description": f"{name} tool",
        "input_schema": {
            "type": "object",
            "properties": {"arg": {"type": "string"}},
            "required": ["arg"],
            "additionalProperties": False,
            "$schema": "http://json-schema.org/draft-07/schema#",
        },
    }
    for name in (
        "Task",
        "Bash",
        "Glob",
        "Grep",
        "LS",
        "ExitPlanMode",
        "Read",
        "Edit",
        "MultiEdit",
        "Write",
        "NotebookEdit",
        "WebFetch",
        "TodoWrite",
        "WebSearch",
        "BashOutput",
    )
]
CLAUDE_CODE_BODY = {
    "model": "claude-sonnet-4-5-20250929",
    "max_tokens": 32000,
    "stream": True,
    "system": [
        {
            "type": "text",
            "text": "You are Claude Code, Anthropic's official CLI for Claude.",
            "cache_control": {"type": "ephemeral"},
        },
        {"type": "text", "text": "You are an interactive CLI tool...", "cache_control": {"type": "ephemeral"}},
    ],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "<system-reminder>Context</system-reminder>"},
                {"type": "text", "text": "fix the failing test", "cache_control": {"type": "ephemeral"}},
            ],
        }
    ],
    "tools": CLAUDE_CODE_TOOLS,
    "metadata": {"user_id": LONG_USER_ID},
    "thinking": {"type": "enabled", "budget_tokens": 31999},
    "temperature": 1,
    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    "output_config": {"effort": "high"},
}


def test_a_claude_code_request_translates_whole() -> None:
    translated = messages_request_to_chat(CLAUDE_CODE_BODY, upstream_model="deepseek-chat")
    assert translated.body == {
        "model": "deepseek-chat",
        "messages": [
            {
                "role": "system",
                "content": "You are Claude Code, Anthropic's official CLI for Claude.\n\n"
                "You are an interactive CLI tool...",
            },
            {"role": "user", "content": "<system-reminder>Context</system-reminder>\n\nfix the failing test"},
        ],
        "max_tokens": 32000,
        "temperature": 1,
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": hashlib.sha256(LONG_USER_ID.encode()).hexdigest(),
        "tools": [
            {
                "type": "function",
                "function": {"name": t["name"], "description": t["description"], "parameters": t["input_schema"]},
            }
            for t in CLAUDE_CODE_TOOLS
        ],
        "reasoning_effort": "high",
    }
    assert translated.notes == [
        "dropped: cache_control",
        "mapped: metadata.user_id -> user (sha256)",
        "mapped: thinking -> reasoning_effort=high",
        "dropped: context_management",
        "dropped: output_config",
    ]


def test_notes_are_header_safe() -> None:
    _, notes = translate(**{"caf\u00e9;\r\nx": 1})
    assert notes == ["dropped: cafx"]


# --- non-streamed responses ---------------------------------------------------------------------


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


# --- streams ------------------------------------------------------------------------------------


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


# --- count_tokens -------------------------------------------------------------------------------


def test_count_tokens_estimate_counts_characters_messages_images_and_tools() -> None:
    tool = {"name": "f", "input_schema": {"type": "object"}}  # 44 characters as JSON
    body = {
        "system": "x" * 10,
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "y" * 20}, {"type": "image", "source": PNG}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "z" * 400},
                    {"type": "tool_use", "id": "t", "name": "Bash", "input": {"a": 1}},
                ],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "w" * 6}]},
        ],
        "tools": [tool],
    }
    chars = 10 + 20 + len("Bash") + len('{"a":1}') + 6 + 44
    assert count_tokens_estimate(body) == -(-chars // 4) + 3 * 3 + 85


@pytest.mark.parametrize(
    "body",
    [None, [], {"messages": "x"}, {"messages": [1, {"content": 5}]}, {"system": [3], "tools": [{"n": 2**70}]}],
)
def test_count_tokens_estimate_never_raises(body: Any) -> None:
    assert count_tokens_estimate(body) >= 0
