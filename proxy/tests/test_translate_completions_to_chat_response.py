"""Chat completions as legacy text completions (proxy.translate.completions_to_chat.response)."""

from openai.types import Completion

from proxy.translate.completions_to_chat.response import chat_response_to_completion

USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


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
