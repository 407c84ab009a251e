"""Anthropic Messages requests as chat completions (proxy.translate.messages_to_chat.request)."""

import hashlib
from typing import Any

import pytest

from proxy.translate import TranslationError
from proxy.translate.messages_to_chat.request import messages_request_to_chat

HI = [{"role": "user", "content": "Hi"}]


EPHEMERAL = {"type": "ephemeral"}


PNG = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}


PNG_PART = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}


LONG_USER_ID = "user_" + "a" * 64 + "_account__session_1b2c3d4e-0000-4000-8000-000000000000"


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


def test_notes_are_header_safe() -> None:
    _, notes = translate(**{"caf\u00e9;\r\nx": 1})
    assert notes == ["dropped: cafx"]
