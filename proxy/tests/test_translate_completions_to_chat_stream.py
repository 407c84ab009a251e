"""Chat chunks as legacy text_completion chunks, read by the openai SDK (proxy.translate.completions_to_chat.stream)."""

from typing import Any

import httpx2
import openai
import orjson
from openai.types import Completion

from proxy.tests.test_translate_completions_to_chat_response import USAGE
from proxy.translate.completions_to_chat.stream import ChatToCompletionsStream


def chunk(delta: dict[str, Any] | None, finish_reason: str | None = None, **extra: Any) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 5, "choices": choices, **extra}


STREAM = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": " a"}),
    chunk({"content": " time"}),
    chunk({}, "stop"),
    chunk(None, usage=USAGE),
]


def text_chunk(text: str, finish_reason: str | None = None) -> dict[str, Any]:
    choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}
    return {"id": "cmpl-1", "object": "text_completion", "created": 7, "model": "text-model", "choices": [choice]}


def run(include_usage: bool, chunks: list[dict[str, Any]] = STREAM) -> list[dict[str, Any]]:
    translator = ChatToCompletionsStream(
        model="text-model", completion_id="cmpl-1", created=7, include_usage=include_usage
    )
    out = [event for c in chunks for event in translator.feed(c)] + translator.close()
    for event in out:
        # The SDK types a finished completion; mid-stream chunks carry a null
        # finish_reason, exactly as OpenAI's own legacy stream does.
        choices = [{**choice, "finish_reason": choice["finish_reason"] or "stop"} for choice in event["choices"]]
        Completion.model_validate({**event, "choices": choices})
    return out


def test_a_stream_becomes_text_completion_chunks_with_usage_when_asked() -> None:
    usage_chunk = {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 7,
        "model": "text-model",
        "choices": [],
        "usage": USAGE,
    }
    assert run(include_usage=True) == [text_chunk(" a"), text_chunk(" time"), text_chunk("", "stop"), usage_chunk]


def test_the_usage_chunk_is_withheld_when_the_client_did_not_ask() -> None:
    assert run(include_usage=False) == [text_chunk(" a"), text_chunk(" time"), text_chunk("", "stop")]


def test_usage_riding_on_the_finish_chunk_is_split_off() -> None:
    out = run(include_usage=True, chunks=[chunk({"content": "x"}, "stop", usage=USAGE)])
    assert out == [text_chunk("x", "stop"), {**text_chunk(""), "choices": [], "usage": USAGE}]


def test_the_openai_sdk_reads_the_translated_stream() -> None:
    sse = b"".join(b"data: " + orjson.dumps(event) + b"\n\n" for event in run(include_usage=True)) + b"data: [DONE]\n\n"

    def serve(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=sse)

    client = openai.OpenAI(
        api_key="k", base_url="http://gateway.test/v1", http_client=httpx2.Client(transport=httpx2.MockTransport(serve))
    )
    chunks = list(client.completions.create(model="text-model", prompt="Once upon", stream=True))
    assert "".join(choice.text for c in chunks for choice in c.choices) == " a time"
    assert [choice.finish_reason for c in chunks for choice in c.choices] == [None, None, "stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 5
