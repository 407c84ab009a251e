"""The count_tokens estimate for upstreams that cannot count (proxy.translate.count_tokens)."""

from typing import Any

import pytest

from proxy.tests.test_translate_messages_to_chat_request import PNG
from proxy.translate.count_tokens import count_tokens_estimate


def test_count_tokens_estimate_counts_characters_messages_images_and_tools() -> None:
    tool = {"name": "f", "input_schema": {"type": "object"}}  # 44 characters as JSON
    body = {
        "system": "x" * 10,
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "y" * 20}, {"type": "image", "source": PNG}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "z" * 400},
                    {"type": "tool_use", "id": "t", "name": "Bash", "input": {"a": 1}},
                ],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "w" * 6}]},
        ],
        "tools": [tool],
    }
    chars = 10 + 20 + len("Bash") + len('{"a":1}') + 6 + 44
    assert count_tokens_estimate(body) == -(-chars // 4) + 3 * 3 + 85


@pytest.mark.parametrize(
    "body",
    [None, [], {"messages": "x"}, {"messages": [1, {"content": 5}]}, {"system": [3], "tools": [{"n": 2**70}]}],
)
def test_count_tokens_estimate_never_raises(body: Any) -> None:
    assert count_tokens_estimate(body) >= 0
