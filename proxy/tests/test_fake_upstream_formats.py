"""The fake upstream's Anthropic, legacy-completions and Responses endpoints,
checked with the official SDKs pointed at it directly (no gateway)."""

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from proxy.tests.fake_upstream import (
    ANTHROPIC_CACHED_USAGE,
    DEFAULT_WORDS,
    PROMPT_TOKENS,
    TOOL_USE_INPUT,
    TOOL_USE_OUTPUT_TOKENS,
    FakeUpstream,
)

TEXT = " ".join(DEFAULT_WORDS)
HELLO: Any = [{"role": "user", "content": "hello"}]
TOOLS: Any = [{"name": "lookup", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    # Its own instance (as conftest's `fake_upstream` starts one), so the
    # requests recorded here are only this module's.
    upstream = FakeUpstream().start_in_thread()
    yield upstream
    upstream.stop()


@pytest.fixture
def claude(fake: FakeUpstream) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=fake.url.removesuffix("/v1"), api_key="sk-ant-test", max_retries=0)


@pytest.fixture
def gpt(fake: FakeUpstream) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.url, api_key="sk-test", max_retries=0)


def test_a_message_answers_the_words_with_anthropic_usage(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(model="claude-x", max_tokens=50, messages=HELLO)
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == TEXT
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == PROMPT_TOKENS
    assert message.usage.cache_read_input_tokens == 0
    assert message.usage.output_tokens == len(DEFAULT_WORDS)


def test_the_fake_records_the_sdk_credential_and_version(fake: FakeUpstream, claude: anthropic.Anthropic) -> None:
    claude.messages.create(model="claude-x", max_tokens=50, messages=[{"role": "user", "content": "marker-h2-1"}])
    seen = [r for r in fake.requests if "marker-h2-1" in str(r.body)]
    assert len(seen) == 1 and seen[0].path == "/v1/messages"
    # This SDK sends its api_key as a bearer token, which the real API accepts too.
    assert seen[0].headers["Authorization"] == "Bearer sk-ant-test"
    assert seen[0].headers["anthropic-version"] == anthropic._constants.ANTHROPIC_API_VERSION


def test_a_streamed_message_accumulates_to_the_same_answer(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(model="claude-x", max_tokens=50, messages=HELLO) as stream:
        texts = list(stream.text_stream)
        message = stream.get_final_message()
    assert "".join(texts) == TEXT and len(texts) == len(DEFAULT_WORDS)
    assert message.content[0].text == TEXT
    assert message.usage.input_tokens == PROMPT_TOKENS
    assert message.usage.output_tokens == len(DEFAULT_WORDS)


def test_a_streamed_message_sends_anthropics_event_sequence(claude: anthropic.Anthropic) -> None:
    with claude.messages.create(model="claude-x", max_tokens=50, messages=HELLO, stream=True) as stream:
        kinds = [event.type for event in stream]
    words = len(DEFAULT_WORDS)
    assert kinds == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * words,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


def test_the_raw_stream_names_each_event_and_pings_after_message_start(fake: FakeUpstream) -> None:
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    body = {"model": "claude-x", "max_tokens": 5, "messages": HELLO, "stream": True}
    response = httpx.post(fake.url + "/messages", json=body, headers=headers)
    names = [line[len("event: ") :] for line in response.text.split("\n") if line.startswith("event: ")]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-2:] == ["message_delta", "message_stop"]


def test_a_cached_model_reports_cache_reads_and_both_kinds_of_cache_write(claude: anthropic.Anthropic) -> None:
    usage = claude.messages.create(model="claude-fake-cached", max_tokens=50, messages=HELLO).usage
    assert usage.input_tokens == ANTHROPIC_CACHED_USAGE["input_tokens"] == 50
    assert usage.cache_read_input_tokens == 40
    assert usage.cache_creation_input_tokens == 30
    assert usage.cache_creation is not None
    assert (usage.cache_creation.ephemeral_5m_input_tokens, usage.cache_creation.ephemeral_1h_input_tokens) == (20, 10)


def test_tools_get_a_tool_use_answer_calling_the_first_tool(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(model="claude-x", max_tokens=50, messages=HELLO, tools=TOOLS)
    assert message.stop_reason == "tool_use"
    block = message.content[0]
    assert (block.type, block.name, block.input) == ("tool_use", "lookup", TOOL_USE_INPUT)
    assert message.usage.output_tokens == TOOL_USE_OUTPUT_TOKENS


def test_a_streamed_tool_use_arrives_as_json_pieces_the_sdk_reassembles(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(model="claude-x", max_tokens=50, messages=HELLO, tools=TOOLS) as stream:
        message = stream.get_final_message()
    assert message.stop_reason == "tool_use"
    assert message.content[0].input == TOOL_USE_INPUT


def test_a_tool_result_gets_a_text_answer(claude: anthropic.Anthropic) -> None:
    messages: Any = [
        *HELLO,
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "found"}]},
    ]
    message = claude.messages.create(model="claude-x", max_tokens=50, messages=messages, tools=TOOLS)
    assert message.stop_reason == "end_turn"
    assert message.content[0].text == TEXT


def test_an_error_model_answers_anthropics_error_envelope(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.RateLimitError) as caught:
        claude.messages.create(model="claude-error-429", max_tokens=50, messages=HELLO)
    assert caught.value.status_code == 429
    assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert caught.value.response.headers["retry-after"] == "7"


def test_an_overloaded_model_answers_529(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.InternalServerError) as caught:
        claude.messages.create(model="claude-error-529", max_tokens=50, messages=HELLO)
    assert caught.value.status_code == 529
    assert caught.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


@pytest.mark.parametrize(
    ("headers", "status", "kind"),
    [
        ({"anthropic-version": "2023-06-01"}, 401, "authentication_error"),
        ({"x-api-key": "k"}, 400, "invalid_request_error"),
    ],
)
def test_a_missing_key_or_version_header_is_refused_like_the_real_api(
    fake: FakeUpstream, headers: dict[str, str], status: int, kind: str
) -> None:
    body = {"model": "claude-x", "max_tokens": 5, "messages": HELLO}
    response = httpx.post(fake.url + "/messages", json=body, headers=headers)
    assert response.status_code == status
    assert response.json()["type"] == "error" and response.json()["error"]["type"] == kind


def test_a_message_without_max_tokens_is_refused(fake: FakeUpstream) -> None:
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    response = httpx.post(fake.url + "/messages", json={"model": "claude-x", "messages": HELLO}, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"] == {"type": "invalid_request_error", "message": "max_tokens: Field required"}


def test_count_tokens_is_deterministic_and_grows_with_the_prompt(claude: anthropic.Anthropic) -> None:
    short = claude.messages.count_tokens(model="claude-x", messages=HELLO).input_tokens
    again = claude.messages.count_tokens(model="claude-x", messages=HELLO).input_tokens
    longer = claude.messages.count_tokens(model="claude-x", messages=[{"role": "user", "content": "hello " * 50}])
    assert short == again > 0
    assert longer.input_tokens > short


def test_a_legacy_completion_answers_a_text_completion(gpt: openai.OpenAI) -> None:
    completion = gpt.completions.create(model="gpt-x", prompt="say")
    assert completion.object == "text_completion"
    assert [c.text for c in completion.choices] == [TEXT]
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (PROMPT_TOKENS, len(DEFAULT_WORDS))


def test_a_streamed_legacy_completion_ends_with_a_usage_chunk_when_asked(gpt: openai.OpenAI) -> None:
    chunks = list(
        gpt.completions.create(model="gpt-x", prompt="say", stream=True, stream_options={"include_usage": True})
    )
    assert "".join(c.text for chunk in chunks for c in chunk.choices) == TEXT
    assert [c.finish_reason for c in chunks[-2].choices] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == PROMPT_TOKENS + len(DEFAULT_WORDS)


def test_a_streamed_legacy_completion_has_no_usage_chunk_unless_asked(gpt: openai.OpenAI) -> None:
    chunks = list(gpt.completions.create(model="gpt-x", prompt="say", stream=True))
    assert all(chunk.usage is None for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_a_response_carries_output_text_and_responses_usage(gpt: openai.OpenAI) -> None:
    response = gpt.responses.create(model="fake-cached", input="hello")
    assert response.output_text == TEXT
    assert response.usage is not None
    assert response.usage.model_dump(exclude_none=True) == {
        "input_tokens": 100,
        "input_tokens_details": {"cached_tokens": 40},
        "output_tokens": 30,
        "output_tokens_details": {"reasoning_tokens": 10},
        "total_tokens": 130,
    }


def test_a_streamed_response_sends_text_deltas_and_completes_with_usage(gpt: openai.OpenAI) -> None:
    events = list(gpt.responses.create(model="gpt-x", input="hello", stream=True))
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds.count("response.output_text.delta") == len(DEFAULT_WORDS)
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == TEXT
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.output_text == TEXT
    assert completed.response.usage.output_tokens == len(DEFAULT_WORDS)
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_the_openai_error_models_work_on_the_new_openai_endpoints(gpt: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        gpt.completions.create(model="fake-error-404", prompt="x")
    with pytest.raises(openai.RateLimitError):
        gpt.responses.create(model="fake-error-429", input="x")
