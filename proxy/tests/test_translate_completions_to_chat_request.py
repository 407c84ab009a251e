"""Legacy completions requests as chat completions (proxy.translate.completions_to_chat.request)."""

from typing import Any

import pytest

from proxy.translate import TranslationError
from proxy.translate.completions_to_chat.request import completions_request_to_chat

USER_HI = [{"role": "user", "content": "Once upon"}]


PROMPT_NOTE = "mapped: prompt -> user message"


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
