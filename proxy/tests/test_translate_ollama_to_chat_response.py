"""Chat completions as Ollama's chat and generate answers (proxy.translate.ollama_to_chat.response).

The `ollama` package, when installed, checks fidelity: its pydantic types
parse every answer. Those tests skip without it.
"""

from typing import Any

from proxy.tests.ollama_fidelity import CREATED, ollama_types
from proxy.translate.ollama_to_chat.response import chat_response_to_ollama_chat, chat_response_to_ollama_generate

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
