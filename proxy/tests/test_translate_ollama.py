"""Ollama's API (client) <-> OpenAI chat completions (upstream).

The `ollama` package, when installed, checks fidelity: its pydantic types
parse every answer, and its Client runs against the translated output over a
mock transport. Those tests skip without it.
"""

from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from proxy.translate import TranslationError
from proxy.translate.ollama import (
    ChatToOllamaStream,
    chat_response_to_ollama_chat,
    chat_response_to_ollama_generate,
    embeddings_response_to_ollama_embed,
    embeddings_response_to_ollama_embeddings,
    ollama_chat_request_to_chat,
    ollama_embed_request_to_embeddings,
    ollama_embeddings_request_to_embeddings,
    ollama_generate_request_to_chat,
    ollama_ps,
    ollama_show,
    ollama_tags,
)

HI = [{"role": "user", "content": "Hi"}]
STREAMING = {"stream": True, "stream_options": {"include_usage": True}}
PNG_B64 = "iVBORw0KGgowMDAw"
JPEG_B64 = "/9j/4AAQSkZJRg=="
TOOL = {"type": "function", "function": {"name": "add", "parameters": {"type": "object", "properties": {}}}}
SCHEMA = {"type": "object", "properties": {"a": {"type": "string"}}}
CREATED = "2025-01-02T03:04:05.000000Z"


def ollama_types() -> Any:
    return pytest.importorskip("ollama._types")


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


# --- answers --------------------------------------------------------------

USAGE = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
COUNTS = {
    "done": True,
    "done_reason": "stop",
    "total_duration": 2_000_000,
    "load_duration": 0,
    "prompt_eval_count": 12,
    "prompt_eval_duration": 0,
    "eval_count": 5,
    "eval_duration": 2_000_000,
}


def chat_answer(message: dict[str, Any], finish_reason: str = "stop") -> dict[str, Any]:
    choice = {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish_reason}
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 5, "choices": [choice], "usage": USAGE}


def to_chat(data: dict[str, Any]) -> dict[str, Any]:
    return chat_response_to_ollama_chat(data, model="llama3", created_at=CREATED, duration_ns=2_000_000)


def test_a_chat_answer_becomes_an_ollama_chat_response() -> None:
    calls = [
        {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a":1,"b":2}'}},
        {"id": "call_2", "type": "function", "function": {"name": "now", "arguments": ""}},
    ]
    answer = to_chat(
        chat_answer({"content": "Adding.", "reasoning_content": "Easy.", "tool_calls": calls}, "tool_calls")
    )
    assert answer == {
        "model": "llama3",
        "created_at": CREATED,
        "message": {
            "role": "assistant",
            "content": "Adding.",
            "thinking": "Easy.",
            "tool_calls": [
                {"function": {"name": "add", "arguments": {"a": 1, "b": 2}}},
                {"function": {"name": "now", "arguments": {}}},
            ],
        },
        **COUNTS,
    }
    ollama_types().ChatResponse.model_validate(answer)


def test_an_answer_cut_at_the_limit_says_length() -> None:
    answer = to_chat(chat_answer({"content": "Hal"}, "length"))
    assert answer == {
        "model": "llama3",
        "created_at": CREATED,
        "message": {"role": "assistant", "content": "Hal"},
        **COUNTS,
        "done_reason": "length",
    }


def test_malformed_tool_arguments_are_kept_rather_than_lost() -> None:
    calls = [{"id": "c", "type": "function", "function": {"name": "add", "arguments": '{"a":'}}]
    answer = to_chat(chat_answer({"content": None, "tool_calls": calls}, "tool_calls"))
    assert answer["message"]["tool_calls"] == [{"function": {"name": "add", "arguments": {"arguments": '{"a":'}}}]
    ollama_types().ChatResponse.model_validate(answer)


def test_a_chat_answer_becomes_an_ollama_generate_response() -> None:
    data = chat_answer({"content": "Once.", "reasoning": "Hm."})
    answer = chat_response_to_ollama_generate(data, model="llama3", created_at=CREATED, duration_ns=2_000_000)
    assert answer == {
        "model": "llama3",
        "created_at": CREATED,
        "response": "Once.",
        "thinking": "Hm.",
        **COUNTS,
        "context": [],
    }
    ollama_types().GenerateResponse.model_validate(answer)


# --- streams --------------------------------------------------------------


def chunk(delta: dict[str, Any] | None = None, finish_reason: str | None = None, **extra: Any) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 5, "choices": choices, **extra}


def fake_clock(*readings: int) -> Callable[[], int]:
    values: Iterator[int] = iter(readings)
    return lambda: next(values)


def run(chunks: list[dict[str, Any]], *, generate: bool = False) -> list[dict[str, Any]]:
    translator = ChatToOllamaStream(
        model="llama3", generate=generate, created_at=CREATED, clock=fake_clock(1_000, 2_001_000)
    )
    out = [line for c in chunks for line in translator.feed(c)] + translator.close()
    assert translator.close() == [] and translator.feed(chunk({"content": "late"})) == []
    return out


def partial(content: str = "", **message: Any) -> dict[str, Any]:
    return {
        "model": "llama3",
        "created_at": CREATED,
        "message": {"role": "assistant", "content": content, **message},
        "done": False,
    }


FINAL_CHAT = {"model": "llama3", "created_at": CREATED, "message": {"role": "assistant", "content": ""}, **COUNTS}


def test_a_chat_stream_becomes_ndjson_objects_ending_with_the_counts() -> None:
    out = run(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"reasoning_content": "Hm."}),
            chunk({"content": "Hel"}),
            chunk({"content": "lo"}),
            chunk({}, "stop"),
            chunk(usage=USAGE),
        ]
    )
    assert out == [partial(thinking="Hm."), partial("Hel"), partial("lo"), FINAL_CHAT]
    for line in out:
        ollama_types().ChatResponse.model_validate(line)


def test_tool_calls_arrive_whole_when_the_stream_finishes() -> None:
    calls = [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a":'}},
        {"index": 1, "id": "call_2", "type": "function", "function": {"name": "now", "arguments": ""}},
    ]
    out = run(
        [
            chunk({"tool_calls": [calls[0]]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
            chunk({"tool_calls": [calls[1]]}),
            chunk({}, "tool_calls", usage=USAGE),
        ]
    )
    tool_calls = [{"function": {"name": "add", "arguments": {"a": 1}}}, {"function": {"name": "now", "arguments": {}}}]
    assert out == [partial(tool_calls=tool_calls), FINAL_CHAT]


def test_a_generate_stream_uses_response_fields_and_an_empty_context() -> None:
    out = run([chunk({"content": "Once"}), chunk({}, "length"), chunk(usage=USAGE)], generate=True)
    assert out == [
        {"model": "llama3", "created_at": CREATED, "response": "Once", "done": False},
        {"model": "llama3", "created_at": CREATED, "response": "", **COUNTS, "done_reason": "length", "context": []},
    ]
    for line in out:
        ollama_types().GenerateResponse.model_validate(line)


def test_a_finished_stream_without_usage_ends_on_close_with_zero_counts() -> None:
    out = run([chunk({"content": "Hi"}), chunk({}, "stop")])
    assert out[-1] == {**FINAL_CHAT, "prompt_eval_count": 0, "eval_count": 0}


def test_a_broken_stream_ends_with_an_error_object() -> None:
    assert run([chunk({"content": "Hi"})]) == [
        partial("Hi"),
        {"error": "The upstream stream ended before the answer was complete."},
    ]


def test_an_upstream_error_chunk_becomes_an_error_object() -> None:
    assert run([{"error": {"message": "overloaded"}}]) == [{"error": "overloaded"}]


def test_the_ollama_client_reads_the_translated_stream() -> None:
    httpx = pytest.importorskip("httpx")
    ollama = pytest.importorskip("ollama")
    lines = run([chunk({"content": "Hel"}), chunk({"content": "lo"}), chunk({}, "stop"), chunk(usage=USAGE)])
    ndjson = b"".join(orjson.dumps(line) + b"\n" for line in lines)
    client = ollama.Client(
        host="http://gateway.test", transport=httpx.MockTransport(lambda request: httpx.Response(200, content=ndjson))
    )
    parts = list(client.chat(model="llama3", messages=HI, stream=True))
    assert "".join(part.message.content for part in parts) == "Hello"
    assert (parts[-1].done, parts[-1].eval_count) == (True, 5)


def test_the_ollama_client_raises_on_a_broken_stream() -> None:
    httpx = pytest.importorskip("httpx")
    ollama = pytest.importorskip("ollama")
    ndjson = b"".join(orjson.dumps(line) + b"\n" for line in run([chunk({"content": "Hi"})]))
    client = ollama.Client(
        host="http://gateway.test", transport=httpx.MockTransport(lambda request: httpx.Response(200, content=ndjson))
    )
    with pytest.raises(ollama.ResponseError, match="ended before the answer was complete"):
        list(client.chat(model="llama3", messages=HI, stream=True))


# --- /api/tags ------------------------------------------------------------


def test_tags_list_every_model_with_a_stable_digest() -> None:
    tags = ollama_tags([("gpt-4o", "openai"), ("claude-sonnet", "anthropic")], modified_at=CREATED)
    assert tags["models"][0] == {
        "name": "gpt-4o",
        "model": "gpt-4o",
        "modified_at": CREATED,
        "size": 0,
        "digest": "a2a69af70d1b9be70f1abf8218492c5e65aea34285462bd65757cd6f44a7c10e",
        "details": {
            "parent_model": "",
            "format": "",
            "family": "openai",
            "families": ["openai"],
            "parameter_size": "",
            "quantization_level": "",
        },
    }
    assert [model["name"] for model in tags["models"]] == ["gpt-4o", "claude-sonnet"]
    listed = ollama_types().ListResponse.model_validate(tags)
    assert [model.model for model in listed.models] == ["gpt-4o", "claude-sonnet"]


# --- /api/show, /api/ps ------------------------------------------------------


def test_show_describes_a_remote_model_in_the_shape_the_ollama_client_reads() -> None:
    shown = ollama_types().ShowResponse.model_validate(ollama_show("gpt-4o", "openai", modified_at=CREATED))
    assert shown.details.family == "openai"
    assert shown.modelinfo == {"general.architecture": "openai", "general.basename": "gpt-4o"}
    assert shown.capabilities == ["completion"]


def test_ps_lists_every_model_as_loaded_until_the_keep_alive_ends() -> None:
    running = ollama_types().ProcessResponse.model_validate(
        ollama_ps([("gpt-4o", "openai"), ("claude-sonnet", "anthropic")], expires_at=CREATED)
    )
    assert [(m.name, m.details.family, m.size_vram) for m in running.models] == [
        ("gpt-4o", "openai", 0),
        ("claude-sonnet", "anthropic", 0),
    ]
    assert running.models[0].expires_at.isoformat() == "2025-01-02T03:04:05+00:00"


# --- /api/embed, /api/embeddings -----------------------------------------------


def test_an_embed_request_becomes_an_openai_embeddings_request_with_notes_for_what_is_dropped() -> None:
    translated = ollama_embed_request_to_embeddings(
        {"model": "m", "input": ["a", "b"], "truncate": False, "options": {"num_ctx": 8}, "dimensions": 2}
    )
    assert translated.body == {"model": "m", "input": ["a", "b"], "dimensions": 2}
    assert translated.notes == ["dropped: truncate", "dropped: options"]


def test_a_legacy_embeddings_request_needs_a_prompt() -> None:
    assert ollama_embeddings_request_to_embeddings({"model": "m", "prompt": "hi"}).body == {"model": "m", "input": "hi"}
    with pytest.raises(TranslationError) as caught:
        ollama_embeddings_request_to_embeddings({"model": "m", "input": "hi"})
    assert caught.value.param == "prompt"


EMBEDDINGS = {
    "object": "list",
    # out of order: the answer follows `index`, as OpenAI defines it
    "data": [{"index": 1, "embedding": [0.3, 0.4]}, {"index": 0, "embedding": [0.1, 0.2]}],
    "usage": {"prompt_tokens": 6, "total_tokens": 6},
}


def test_an_embeddings_answer_becomes_embeds_in_input_order() -> None:
    answer = embeddings_response_to_ollama_embed(EMBEDDINGS, model="m", duration_ns=5)
    assert answer == {
        "model": "m",
        "embeddings": [[0.1, 0.2], [0.3, 0.4]],
        "total_duration": 5,
        "load_duration": 0,
        "prompt_eval_count": 6,
    }
    assert ollama_types().EmbedResponse.model_validate(answer).embeddings == [[0.1, 0.2], [0.3, 0.4]]


def test_an_embeddings_answer_becomes_the_legacy_single_embedding() -> None:
    answer = embeddings_response_to_ollama_embeddings({"data": [{"index": 0, "embedding": [0.5]}]})
    assert ollama_types().EmbeddingsResponse.model_validate(answer).embedding == [0.5]


@pytest.mark.parametrize("data", [{}, {"data": "x"}, {"data": [{"index": 0, "embedding": "AAAA"}]}])
def test_an_embeddings_answer_of_another_shape_is_refused(data: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        embeddings_response_to_ollama_embed(data, model="m", duration_ns=0)
