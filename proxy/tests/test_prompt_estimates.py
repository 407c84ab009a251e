"""The prompt estimate and the media parts the budget allows for, as each
client API's module locates its texts (proxy.apis.texts). Pure: no database."""

from typing import Any

import pytest

from proxy.apis.registry import spec_for
from proxy.dialects import Dialect
from proxy.usage import estimate_prompt_tokens

IMAGE_URL = {"type": "image_url", "image_url": {"url": "https://x/cat.png"}}
IMAGE_BLOCK = {"type": "image", "source": {"type": "url", "url": "https://x/cat.png"}}


def media_parts(dialect: Dialect, body: dict[str, Any]) -> int:
    return spec_for(dialect).texts.media_parts(body)


@pytest.mark.parametrize(
    ("dialect", "body", "tokens"),
    [
        # 4 characters, one message of 4 framing tokens
        (Dialect.CHAT, {"messages": [{"role": "user", "content": "abcd"}]}, 5),
        (Dialect.OLLAMA_CHAT, {"messages": [{"role": "user", "content": "abcd"}]}, 5),
        (Dialect.MESSAGES, {"system": "abcd", "messages": [{"role": "user", "content": "abcd"}]}, 6),
        (Dialect.RESPONSES, {"instructions": "abcd", "input": "abcd"}, 6),
        (Dialect.RESPONSES, {"input": [{"role": "user", "content": [{"type": "input_text", "text": "abcd"}]}]}, 5),
        (Dialect.COMPLETIONS, {"prompt": "abcdabcd"}, 2),
        (Dialect.OLLAMA_GENERATE, {"system": "abcd", "prompt": "abcd"}, 2),
        (Dialect.EMBEDDINGS, {"input": "abcd"}, 5),
        (Dialect.SPEECH, {"input": "abcd", "instructions": "abcd"}, 6),
        (Dialect.IMAGES, {"prompt": "abcd"}, 1),
    ],
)
def test_the_prompt_estimate_of_plain_text_is_as_it_always_was(
    dialect: Dialect, body: dict[str, Any], tokens: int
) -> None:
    assert estimate_prompt_tokens(dialect, body) == tokens


def test_a_chat_prompt_estimate_counts_the_arguments_of_earlier_tool_calls() -> None:
    call = {"type": "function", "id": "c1", "function": {"name": "f", "arguments": '{"q": "abcdefgh"}'}}
    body = {"messages": [{"role": "assistant", "content": None, "tool_calls": [call]}]}
    assert estimate_prompt_tokens(Dialect.CHAT, body) == 5 + 4  # 17 characters, one message


def test_a_messages_prompt_estimate_counts_tool_results_and_tool_use_input() -> None:
    use = {"type": "tool_use", "id": "t1", "name": "f", "input": {"q": "abcd"}}
    result = {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "abcdabcd"}]}
    body = {"messages": [{"role": "assistant", "content": [use]}, {"role": "user", "content": [result]}]}
    assert estimate_prompt_tokens(Dialect.MESSAGES, body) == 3 + 2 * 4  # 12 characters, two messages


def test_a_responses_prompt_estimate_counts_function_call_outputs_and_arguments() -> None:
    body = {
        "input": [
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": '{"q":"ab"}'},
            {"type": "function_call_output", "call_id": "c1", "output": "abcdef"},
        ]
    }
    assert estimate_prompt_tokens(Dialect.RESPONSES, body) == 4 + 2 * 4  # 16 characters, two items


def test_a_completions_prompt_estimate_counts_a_list_of_prompts_and_the_suffix() -> None:
    body = {"prompt": ["abcd", "abcd"], "suffix": "abcd"}
    assert estimate_prompt_tokens(Dialect.COMPLETIONS, body) == 3


def test_an_embeddings_estimate_counts_the_text_of_a_list_of_inputs() -> None:
    assert estimate_prompt_tokens(Dialect.EMBEDDINGS, {"input": ["abcd", "abcd"]}) == 2 + 2 * 4


def test_media_parts_are_the_ones_each_api_sends() -> None:
    chat = {"messages": [{"role": "user", "content": [{"type": "text", "text": "what?"}, IMAGE_URL, IMAGE_URL]}]}
    assert media_parts(Dialect.CHAT, chat) == 2
    assert media_parts(Dialect.MESSAGES, {"messages": [{"role": "user", "content": [IMAGE_BLOCK]}]}) == 1
    image = {"type": "input_image", "image_url": "https://x/cat.png"}
    responses = {"input": [{"role": "user", "content": [{"type": "input_text", "text": "what?"}, image]}, image]}
    assert media_parts(Dialect.RESPONSES, responses) == 2
    assert media_parts(Dialect.OLLAMA_CHAT, {"messages": [{"role": "user", "content": "?", "images": ["a", "b"]}]}) == 2
    assert media_parts(Dialect.OLLAMA_GENERATE, {"prompt": "?", "images": ["a"]}) == 1
    assert media_parts(Dialect.EMBEDDINGS, {"input": ["abcd"]}) == 0


def test_an_image_a_tool_result_carries_is_a_media_part_of_a_messages_request() -> None:
    result = {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "a plot"}, IMAGE_BLOCK]}
    body = {"messages": [{"role": "user", "content": [result, IMAGE_BLOCK]}]}
    assert media_parts(Dialect.MESSAGES, body) == 2
    assert media_parts(Dialect.COUNT_TOKENS, body) == 2
