"""Legacy completions (client) <-> OpenAI chat completions (upstream)."""

from typing import Any

import httpx2
import openai
import orjson
import pytest
from openai.types import Completion

from proxy.translate import TranslationError
from proxy.translate.completions import (
    ChatToCompletionsStream,
    chat_response_to_completion,
    completions_request_to_chat,
)

USER_HI = [{"role": "user", "content": "Once upon"}]
PROMPT_NOTE = "mapped: prompt -> user message"
USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def translate(**fields: Any) -> tuple[dict[str, Any], list[str]]:
    translated = completions_request_to_chat(
        {"model": "text-model", "prompt": "Once upon", **fields}, upstream_model="up"
    )
    return translated.body, translated.notes


# (fields added to the legacy request, fields of the chat request besides model and messages, notes)
FIELD_CASES: list[tuple[str, dict[str, Any], dict[str, Any], list[str]]] = [
    ("max_tokens defaults to the legacy 16", {}, {"max_tokens": 16}, [PROMPT_NOTE]),
    ("a null max_tokens is the default too", {"max_tokens": None}, {"max_tokens": 16}, [PROMPT_NOTE]),
    ("max_tokens passes", {"max_tokens": 200}, {"max_tokens": 200}, [PROMPT_NOTE]),
    ("stop passes", {"stop": ["\n"]}, {"max_tokens": 16, "stop": ["\n"]}, [PROMPT_NOTE]),
    ("temperature passes", {"temperature": 0.3}, {"max_tokens": 16, "temperature": 0.3}, [PROMPT_NOTE]),
    ("top_p passes", {"top_p": 0.5}, {"max_tokens": 16, "top_p": 0.5}, [PROMPT_NOTE]),
    ("n passes", {"n": 2}, {"max_tokens": 16, "n": 2}, [PROMPT_NOTE]),
    ("user passes", {"user": "u"}, {"max_tokens": 16, "user": "u"}, [PROMPT_NOTE]),
    ("seed passes", {"seed": 7}, {"max_tokens": 16, "seed": 7}, [PROMPT_NOTE]),
    (
        "penalties pass",
        {"presence_penalty": 1, "frequency_penalty": 2},
        {"max_tokens": 16, "presence_penalty": 1, "frequency_penalty": 2},
        [PROMPT_NOTE],
    ),
    (
        "logit_bias passes",
        {"logit_bias": {"50256": -100}},
        {"max_tokens": 16, "logit_bias": {"50256": -100}},
        [PROMPT_NOTE],
    ),
    (
        "stream asks for usage",
        {"stream": True, "stream_options": {"include_usage": False}},
        {"max_tokens": 16, "stream": True, "stream_options": {"include_usage": True}},
        [PROMPT_NOTE],
    ),
    ("stream false adds nothing", {"stream": False}, {"max_tokens": 16}, [PROMPT_NOTE]),
    ("echo false is the default", {"echo": False}, {"max_tokens": 16}, [PROMPT_NOTE]),
    ("best_of 1 is the default", {"best_of": 1}, {"max_tokens": 16}, [PROMPT_NOTE]),
    ("a null logprobs is absent", {"logprobs": None}, {"max_tokens": 16}, [PROMPT_NOTE]),
    ("an empty suffix is absent", {"suffix": ""}, {"max_tokens": 16}, [PROMPT_NOTE]),
    ("an unknown field is dropped", {"frobnicate": 1}, {"max_tokens": 16}, [PROMPT_NOTE, "dropped: frobnicate"]),
]


@pytest.mark.parametrize(("fields", "added", "notes"), [c[1:] for c in FIELD_CASES], ids=[c[0] for c in FIELD_CASES])
def test_each_request_field_is_passed_mapped_or_dropped_with_a_note(
    fields: dict[str, Any], added: dict[str, Any], notes: list[str]
) -> None:
    assert translate(**fields) == ({"model": "up", "messages": USER_HI, **added}, notes)


def test_a_list_of_one_prompt_is_that_prompt() -> None:
    body, _ = translate(prompt=["Once upon"])
    assert body["messages"] == USER_HI


ERROR_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("several prompts", {"prompt": ["a", "b"]}, "prompt"),
    ("a token array", {"prompt": [1, 2, 3]}, "prompt"),
    ("several token arrays", {"prompt": [[1, 2], [3]]}, "prompt"),
    ("no prompt", {"prompt": None}, "prompt"),
    ("suffix", {"suffix": "end"}, "suffix"),
    ("echo", {"echo": True}, "echo"),
    ("logprobs", {"logprobs": 2}, "logprobs"),
    ("logprobs zero", {"logprobs": 0}, "logprobs"),
    ("best_of", {"best_of": 3}, "best_of"),
]


@pytest.mark.parametrize(("fields", "param"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_what_chat_cannot_honour_is_refused_naming_the_param(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(TranslationError) as caught:
        translate(**fields)
    assert caught.value.param == param


def test_a_chat_answer_becomes_a_text_completion() -> None:
    data = {
        "id": "chatcmpl-xyz",
        "object": "chat.completion",
        "created": 9,
        "model": "upstream-name",
        "system_fingerprint": "fp_1",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": " a time"}, "finish_reason": "length"},
            {"index": 1, "message": {"role": "assistant", "content": None}, "finish_reason": "content_filter"},
        ],
        "usage": USAGE,
    }
    completion = chat_response_to_completion(data, model="text-model")
    assert completion == {
        "id": "cmpl-xyz",
        "object": "text_completion",
        "created": 9,
        "model": "text-model",
        "choices": [
            {"text": " a time", "index": 0, "logprobs": None, "finish_reason": "length"},
            {"text": "", "index": 1, "logprobs": None, "finish_reason": "content_filter"},
        ],
        "system_fingerprint": "fp_1",
        "usage": USAGE,
    }
    assert Completion.model_validate(completion).choices[0].text == " a time"


def test_an_unknown_finish_reason_reads_as_stop() -> None:
    data = {
        "id": "x",
        "created": 1,
        "choices": [{"index": 0, "message": {"content": "a"}, "finish_reason": "tool_calls"}],
    }
    completion = chat_response_to_completion(data, model="m")
    assert completion["choices"][0]["finish_reason"] == "stop"
    assert "usage" not in completion
    Completion.model_validate(completion)


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
