"""Chat completions as Responses API responses (proxy.translate.responses_to_chat.response)."""

from typing import Any

from openai.types.responses import Response

from proxy.tests.test_translate_responses_to_chat_request import FUNCTION_TOOL
from proxy.translate.responses_to_chat.response import chat_response_to_responses

REQUEST = {
    "model": "gpt-5",
    "input": "Hi",
    "instructions": "Be brief.",
    "tools": [FUNCTION_TOOL, {"type": "web_search"}],
}
CHAT_USAGE = {
    "prompt_tokens": 10,
    "completion_tokens": 7,
    "total_tokens": 17,
    "prompt_tokens_details": {"cached_tokens": 4},
    "completion_tokens_details": {"reasoning_tokens": 2},
}
RESPONSES_USAGE = {
    "input_tokens": 10,
    "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
    "output_tokens": 7,
    "output_tokens_details": {"reasoning_tokens": 2},
    "total_tokens": 17,
}


def chat_answer(message: dict[str, Any], finish_reason: str = "stop", usage: Any = CHAT_USAGE) -> dict[str, Any]:
    choice = {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish_reason}
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 5, "choices": [choice], "usage": usage}


def to_responses(data: dict[str, Any], request: dict[str, Any] = REQUEST) -> dict[str, Any]:
    return chat_response_to_responses(data, model="gpt-5", response_id="resp_abc", created_at=5, request=request)


def envelope(status: str, output: list[dict[str, Any]], usage: Any = RESPONSES_USAGE, **extra: Any) -> dict[str, Any]:
    return {
        "id": "resp_abc",
        "object": "response",
        "created_at": 5,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": "Be brief.",
        "max_output_tokens": None,
        "model": "gpt-5",
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": None,
        "temperature": None,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [FUNCTION_TOOL],
        "top_p": None,
        "user": None,
        "metadata": {},
        "usage": usage,
        **extra,
    }


def text_message(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": []}]
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def test_an_answer_becomes_reasoning_message_and_function_call_items() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q":"x"}'}}
    answer = chat_answer({"content": "Let me look.", "reasoning_content": "Think.", "tool_calls": [call]}, "tool_calls")
    response = to_responses(answer)
    assert response == envelope(
        "completed",
        [
            {"type": "reasoning", "id": "rs_abc_0", "summary": [{"type": "summary_text", "text": "Think."}]},
            text_message("msg_abc_1", "Let me look."),
            {
                "type": "function_call",
                "id": "fc_abc_2",
                "call_id": "call_1",
                "name": "lookup",
                "arguments": '{"q":"x"}',
                "status": "completed",
            },
        ],
    )
    assert Response.model_validate(response).output_text == "Let me look."


def test_a_call_without_text_has_no_message_item() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    response = to_responses(chat_answer({"content": None, "tool_calls": [call]}, "tool_calls"))
    assert [item["type"] for item in response["output"]] == ["function_call"]
    Response.model_validate(response)


def test_an_empty_answer_still_has_its_empty_message() -> None:
    response = to_responses(chat_answer({"content": ""}, usage=None))
    assert response == envelope("completed", [text_message("msg_abc_0", "")], usage=None)
    assert Response.model_validate(response).output_text == ""


def test_an_answer_cut_at_the_token_limit_is_incomplete() -> None:
    request = {**REQUEST, "max_output_tokens": 7, "temperature": 0.2, "text": {"format": {"type": "json_object"}}}
    response = to_responses(chat_answer({"content": "Half"}, "length"), request)
    assert response == envelope(
        "incomplete",
        [text_message("msg_abc_0", "Half", status="incomplete")],
        incomplete_details={"reason": "max_output_tokens"},
        max_output_tokens=7,
        temperature=0.2,
        text={"format": {"type": "json_object"}},
    )
    Response.model_validate(response)


def test_a_refusal_becomes_a_refusal_part() -> None:
    response = to_responses(chat_answer({"content": None, "refusal": "No."}))
    assert response["output"] == [
        {
            "type": "message",
            "id": "msg_abc_0",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "refusal", "refusal": "No."}],
        }
    ]
    Response.model_validate(response)


def test_cache_writes_reported_by_the_upstream_reach_the_usage() -> None:
    usage = {"prompt_tokens": 10, "completion_tokens": 1, "prompt_tokens_details": {"cache_write_tokens": 6}}
    response = to_responses(chat_answer({"content": "x"}, usage=usage))
    assert response["usage"] == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 6},
        "output_tokens": 1,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 11,
    }
