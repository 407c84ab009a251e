"""Chat chunks as Ollama's NDJSON stream (proxy.translate.ollama_to_chat.stream).

The `ollama` package, when installed, checks fidelity: its pydantic types
parse every answer,
and its Client reads the translated stream over a mock transport. Those tests skip without it.
"""

from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from proxy.tests.ollama_fidelity import CREATED, ollama_types
from proxy.tests.test_translate_ollama_to_chat_request import HI
from proxy.tests.test_translate_ollama_to_chat_response import COUNTS, USAGE
from proxy.translate.ollama_to_chat.stream import ChatToOllamaStream


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
