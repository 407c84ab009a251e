"""Ollama's chat and generate requests as chat completions (proxy.translate.ollama_to_chat.request).

What the `ollama` package's Client sends is checked when it is installed (skipped without it).
"""

from typing import Any

import orjson
import pytest

from proxy.translate import TranslationError
from proxy.translate.ollama_to_chat.request import ollama_chat_request_to_chat, ollama_generate_request_to_chat

HI = [{"role": "user", "content": "Hi"}]


STREAMING = {"stream": True, "stream_options": {"include_usage": True}}


PNG_B64 = "iVBORw0KGgowMDAw"


JPEG_B64 = "/9j/4AAQSkZJRg=="


TOOL = {"type": "function", "function": {"name": "add", "parameters": {"type": "object", "properties": {}}}}


SCHEMA = {"type": "object", "properties": {"a": {"type": "string"}}}


def translate_chat(**fields: Any) -> tuple[dict[str, Any], list[str]]:
    body = {"model": "llama3", "messages": HI, "stream": False, **fields}
    translated = ollama_chat_request_to_chat(body, upstream_model="up")
    return translated.body, translated.notes


# (fields added to a non-streamed Ollama chat request, fields added to the chat request, notes)
FIELD_CASES: list[tuple[str, dict[str, Any], dict[str, Any], list[str]]] = [
    ("nothing extra", {}, {}, []),
    ("stream true asks for usage", {"stream": True}, STREAMING, []),
    ("format json is json_object", {"format": "json"}, {"response_format": {"type": "json_object"}}, []),
    (
        "a format schema is json_schema",
        {"format": SCHEMA},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "response", "schema": SCHEMA}}},
        [],
    ),
    ("an empty format is none", {"format": ""}, {}, []),
    ("temperature passes", {"options": {"temperature": 0.2}}, {"temperature": 0.2}, []),
    ("top_p passes", {"options": {"top_p": 0.9}}, {"top_p": 0.9}, []),
    ("num_predict becomes max_tokens", {"options": {"num_predict": 64}}, {"max_tokens": 64}, []),
    ("an unlimited num_predict is no limit", {"options": {"num_predict": -1}}, {}, []),
    ("stop passes", {"options": {"stop": ["\n"]}}, {"stop": ["\n"]}, []),
    ("seed passes", {"options": {"seed": 3}}, {"seed": 3}, []),
    ("penalties pass", {"options": {"presence_penalty": 1.0}}, {"presence_penalty": 1.0}, []),
    ("top_k is dropped", {"options": {"top_k": 40}}, {}, ["dropped: options.top_k"]),
    ("num_ctx is dropped", {"options": {"num_ctx": 4096}}, {}, ["dropped: options.num_ctx"]),
    (
        "think true is medium effort",
        {"think": True},
        {"reasoning_effort": "medium"},
        ["mapped: think -> reasoning_effort=medium"],
    ),
    ("a think level is that effort", {"think": "high"}, {"reasoning_effort": "high"}, []),
    ("think false is dropped", {"think": False}, {}, ["dropped: think=false"]),
    ("keep_alive is dropped", {"keep_alive": "5m"}, {}, ["dropped: keep_alive"]),
    ("tools pass as they are", {"tools": [TOOL]}, {"tools": [TOOL]}, []),
    ("an unknown field is dropped", {"logprobs": True}, {}, ["dropped: logprobs"]),
]


@pytest.mark.parametrize(("fields", "added", "notes"), [c[1:] for c in FIELD_CASES], ids=[c[0] for c in FIELD_CASES])
def test_each_chat_field_is_passed_mapped_or_dropped_with_a_note(
    fields: dict[str, Any], added: dict[str, Any], notes: list[str]
) -> None:
    assert translate_chat(**fields) == ({"model": "up", "messages": HI, **added}, notes)


def test_ollama_streams_when_the_request_does_not_say() -> None:
    translated = ollama_chat_request_to_chat({"model": "llama3", "messages": HI}, upstream_model="up")
    assert translated.body == {"model": "up", "messages": HI, **STREAMING}


def test_messages_with_images_tool_calls_and_tool_results_become_chat_messages() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Add these", "images": [PNG_B64, JPEG_B64, "data:image/gif;base64,R0lGOD"]},
        {
            "role": "assistant",
            "content": "",
            "thinking": "Two sums.",
            "tool_calls": [
                {"function": {"name": "add", "arguments": {"a": 1, "b": 2}}},
                {"function": {"name": "mul", "arguments": {"a": 3, "b": 4}}},
            ],
        },
        {"role": "tool", "content": "12", "tool_name": "mul"},
        {"role": "tool", "content": "3"},
        {"role": "assistant", "content": "3 and 12."},
    ]
    body, notes = translate_chat(messages=messages)
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Add these"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
                {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{JPEG_B64}"}},
                {"type": "image_url", "image_url": {"url": "data:image/gif;base64,R0lGOD"}},
            ],
        },
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "call_2_0", "type": "function", "function": {"name": "add", "arguments": '{"a":1,"b":2}'}},
                {"id": "call_2_1", "type": "function", "function": {"name": "mul", "arguments": '{"a":3,"b":4}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_2_1", "content": "12"},
        {"role": "tool", "tool_call_id": "call_2_0", "content": "3"},
        {"role": "assistant", "content": "3 and 12."},
    ]
    assert notes == ["dropped: message thinking"]


def test_a_generate_request_becomes_system_and_user_messages() -> None:
    body = {
        "model": "llama3",
        "prompt": "Describe",
        "system": "Be brief.",
        "images": [PNG_B64],
        "format": "json",
        "options": {"num_predict": 10},
        "raw": True,
        "template": "{{ .Prompt }}",
        "context": [1, 2],
        "suffix": "end",
    }
    translated = ollama_generate_request_to_chat(body, upstream_model="up")
    assert translated.body == {
        "model": "up",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
                ],
            },
        ],
        **STREAMING,
        "response_format": {"type": "json_object"},
        "max_tokens": 10,
    }
    assert translated.notes == ["dropped: raw", "dropped: template", "dropped: context", "dropped: suffix"]


def test_a_plain_generate_request_without_stream_false_streams() -> None:
    translated = ollama_generate_request_to_chat({"model": "llama3", "prompt": "Hi", "raw": False}, upstream_model="up")
    assert translated == type(translated)(body={"model": "up", "messages": HI, **STREAMING}, notes=[])


ERROR_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("messages must be a list", {"messages": "Hi"}, "messages"),
    ("a message must be an object", {"messages": ["Hi"]}, "messages[0]"),
    ("an unknown role", {"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ("content must be text", {"messages": [{"role": "user", "content": [1]}]}, "messages[0].content"),
    (
        "images must be base64 strings",
        {"messages": [{"role": "user", "content": "x", "images": [1]}]},
        "messages[0].images",
    ),
    ("a tool result without a call", {"messages": [*HI, {"role": "tool", "content": "3"}]}, "messages[1]"),
    (
        "a tool call needs a name",
        {"messages": [{"role": "assistant", "content": "", "tool_calls": [{"function": {}}]}]},
        "messages[0].tool_calls[0]",
    ),
    ("an unknown format", {"format": "yaml"}, "format"),
    ("options must be an object", {"options": [1]}, "options"),
    ("an unknown think level", {"think": "max"}, "think"),
]


@pytest.mark.parametrize(("fields", "param"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_requests_chat_cannot_express_are_refused_naming_the_param(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(TranslationError) as caught:
        translate_chat(**fields)
    assert caught.value.param == param


def test_what_the_ollama_client_sends_translates() -> None:
    httpx = pytest.importorskip("httpx")
    ollama = pytest.importorskip("ollama")
    sent: list[dict[str, Any]] = []

    def serve(request: Any) -> Any:
        sent.append(orjson.loads(request.content))
        return httpx.Response(
            200, json={"model": "llama3", "message": {"role": "assistant", "content": ""}, "done": True}
        )

    client = ollama.Client(host="http://gateway.test", transport=httpx.MockTransport(serve))
    messages = [{"role": "user", "content": "Hi", "images": [b"\x89PNG\r\n\x1a\n0000"]}]
    client.chat(model="llama3", messages=messages, tools=[TOOL], options={"temperature": 0}, format="json", think=True)
    translated = ollama_chat_request_to_chat(sent[0], upstream_model="up")
    assert translated.body == {
        "model": "up",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Hi"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
                ],
            }
        ],
        "tools": [TOOL],
        "temperature": 0,
        "response_format": {"type": "json_object"},
        "reasoning_effort": "medium",
    }
