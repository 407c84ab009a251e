"""Every client speaks its own API: the official anthropic and openai SDKs,
and Ollama's NDJSON, against the gateway under daphne, served by fake
upstreams of both formats (the same fake as an OpenAI and as an Anthropic
provider: see conftest's gateway_config)."""

from typing import Any

import anthropic
import httpx2 as httpx
import openai
import orjson
import pytest

from conftest import UPSTREAM_SECRET, IssuedKey, Ledger, unique_marker
from proxy.tests.fake_upstream import DEFAULT_WORDS, PROMPT_TOKENS, FakeUpstream
from proxy.tests.live import LiveGateway

pytestmark = pytest.mark.usefixtures("live_gateway")
TEXT = " ".join(DEFAULT_WORDS)
WORDS = len(DEFAULT_WORDS)


def anthropic_client(gateway: LiveGateway, key: IssuedKey | str) -> anthropic.Anthropic:
    plaintext = key if isinstance(key, str) else key.plaintext
    return anthropic.Anthropic(base_url=gateway.url, api_key=plaintext, max_retries=0, timeout=20)


def openai_client(gateway: LiveGateway, key: IssuedKey) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key.plaintext, max_retries=0, timeout=20)


def seen_by_upstream(fake: FakeUpstream, marker: str) -> Any:
    matches = [r for r in fake.requests if marker in orjson.dumps(r.body).decode()]
    assert len(matches) == 1, f"the upstream saw {len(matches)} requests with {marker}"
    return matches[0]


# --- Anthropic Messages in front of an OpenAI-format upstream -----------------


def test_a_message_to_an_openai_upstream_is_translated_there_and_back(
    live_gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream, ledger: Ledger
) -> None:
    marker = unique_marker()
    message = anthropic_client(live_gateway, key).messages.create(
        model="gpt-test",
        max_tokens=50,
        system="Be brief.",
        stop_sequences=["END"],
        messages=[{"role": "user", "content": marker}],
        metadata={"user_id": "user-7"},
        extra_body={"temperature": 0.5},  # this SDK version no longer offers it as an argument
    )
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == TEXT
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (PROMPT_TOKENS, WORDS)
    seen = seen_by_upstream(fake_upstream, marker)
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["Authorization"] == f"Bearer {UPSTREAM_SECRET}"
    assert seen.body["model"] == "gpt-up"
    assert seen.body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": marker}]
    assert (seen.body["max_tokens"], seen.body["stop"], seen.body["temperature"]) == (50, ["END"], 0.5)
    assert seen.body["user"] == "user-7"
    [record] = ledger.wait(key.key_id, 1)
    assert (record.endpoint, record.public_model, record.upstream_model) == ("messages", "gpt-test", "gpt-up")
    assert (record.input_tokens, record.output_tokens) == (PROMPT_TOKENS, WORDS)
    assert record.cost_nanos == PROMPT_TOKENS * 150 + WORDS * 600  # $0.15 and $0.60 per million


def test_a_streamed_message_from_an_openai_upstream_has_anthropics_event_sequence(
    live_gateway: LiveGateway, key: IssuedKey, ledger: Ledger
) -> None:
    with anthropic_client(live_gateway, key).messages.stream(
        model="gpt-test", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        kinds = [event.type for event in stream if not event.type.startswith(("text", "content_block_delta"))]
        final = stream.get_final_message()
    assert kinds[0] == "message_start"
    assert kinds[1:] == ["content_block_start", "content_block_stop", "message_delta", "message_stop"]
    assert final.content[0].text == TEXT
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (PROMPT_TOKENS, WORDS)
    [record] = ledger.wait(key.key_id, 1)
    assert (record.endpoint, record.stream, record.usage_estimated) == ("messages", True, False)
    assert (record.input_tokens, record.output_tokens) == (PROMPT_TOKENS, WORDS)


def test_a_tool_use_round_trip_through_an_openai_upstream(
    live_gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream
) -> None:
    tools = [
        {
            "name": "search",
            "description": "Search.",
            "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
        }
    ]
    client = anthropic_client(live_gateway, key)
    with client.messages.stream(
        model="gpt-test",
        max_tokens=50,
        tools=tools,
        messages=[{"role": "user", "content": "find w0"}],
    ) as stream:
        first = stream.get_final_message()
    assert first.stop_reason == "tool_use"
    [use] = [block for block in first.content if block.type == "tool_use"]
    assert (use.name, use.input) == ("search", {"q": "w0"})
    marker = unique_marker()
    second = client.messages.create(
        model="gpt-test",
        max_tokens=50,
        tools=tools,
        messages=[
            {"role": "user", "content": "find w0"},
            {"role": "assistant", "content": [use.model_dump()]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": marker}]},
        ],
    )
    assert second.content[0].text == TEXT
    seen = seen_by_upstream(fake_upstream, marker)
    assert seen.body["tools"] == [
        {
            "type": "function",
            "function": {"name": "search", "description": "Search.", "parameters": tools[0]["input_schema"]},
        }
    ]
    assistant, result = seen.body["messages"][1:3]
    assert assistant["tool_calls"] == [
        {"id": use.id, "type": "function", "function": {"name": "search", "arguments": '{"q":"w0"}'}}
    ]
    assert result == {"role": "tool", "tool_call_id": use.id, "content": marker}


def test_what_has_no_openai_equivalent_is_named_in_a_response_header(live_gateway: LiveGateway, key: IssuedKey) -> None:
    raw = anthropic_client(live_gateway, key).messages.with_raw_response.create(
        model="gpt-test",
        max_tokens=50,
        messages=[{"role": "user", "content": "hi"}],
        extra_body={"top_k": 5, "context_management": {"edits": []}},
    )
    notes = raw.headers["x-gateway-translation-notes"]
    assert "top_k" in notes and "context_management" in notes
    assert raw.parse().content[0].text == TEXT


def test_count_tokens_for_an_openai_upstream_is_an_estimate_and_says_so(
    live_gateway: LiveGateway, key: IssuedKey, ledger: Ledger
) -> None:
    raw = anthropic_client(live_gateway, key).messages.with_raw_response.count_tokens(
        model="gpt-test", messages=[{"role": "user", "content": "a" * 400}]
    )
    assert raw.headers["x-gateway-token-count"] == "estimated"
    assert 100 <= raw.parse().input_tokens <= 120
    assert ledger.records(key.key_id) == []  # nothing went upstream


def test_a_bad_key_is_an_anthropic_authentication_error(live_gateway: LiveGateway) -> None:
    with pytest.raises(anthropic.AuthenticationError) as caught:
        anthropic_client(live_gateway, "gw-not-a-real-key").messages.create(
            model="gpt-test", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 401
    assert caught.value.body["type"] == "error"  # type: ignore[index]
    assert caught.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]


# --- Anthropic Messages to an Anthropic upstream: byte for byte ----------------


def test_a_streamed_message_to_an_anthropic_upstream_passes_through_byte_for_byte(
    live_gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream, ledger: Ledger
) -> None:
    body = {"model": "claude-test", "max_tokens": 64, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"x-api-key": key.plaintext, "anthropic-version": "2023-06-01", "anthropic-beta": "tools-2024-05-16"}
    via_gateway = httpx.post(live_gateway.url + "/v1/messages?beta=true", json=body, headers=headers, timeout=20)
    direct = httpx.post(
        fake_upstream.url + "/messages",
        json={**body, "model": "claude-up"},
        headers={**headers, "x-api-key": UPSTREAM_SECRET},
        timeout=20,
    )
    assert via_gateway.status_code == 200
    assert via_gateway.headers["content-type"].startswith("text/event-stream")
    assert via_gateway.content == direct.content
    seen = fake_upstream.requests[-2]
    assert (seen.path, seen.headers["x-api-key"]) == ("/v1/messages", UPSTREAM_SECRET)
    assert seen.headers["anthropic-beta"] == "tools-2024-05-16"
    [record] = ledger.wait(key.key_id, 1)
    assert (record.endpoint, record.provider, record.upstream_model) == ("messages", "fake-anthropic", "claude-up")
    assert (record.input_tokens, record.output_tokens) == (PROMPT_TOKENS, WORDS)
    assert record.cost_nanos == PROMPT_TOKENS * 3000 + WORDS * 15000


def test_anthropic_cache_reads_and_writes_are_recorded_in_their_own_buckets(
    live_gateway: LiveGateway, key: IssuedKey, ledger: Ledger
) -> None:
    message = anthropic_client(live_gateway, key).messages.create(
        model="claude-cached", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    )
    usage = message.usage
    [record] = ledger.wait(key.key_id, 1)
    assert record.input_tokens == usage.input_tokens
    assert record.cached_input_tokens == usage.cache_read_input_tokens
    assert record.cache_write_5m_tokens + record.cache_write_1h_tokens == usage.cache_creation_input_tokens
    assert record.cost_nanos == (
        record.input_tokens * 3000
        + record.cached_input_tokens * 300
        + record.cache_write_5m_tokens * 3750
        + record.cache_write_1h_tokens * 6000
        + record.output_tokens * 15000
    )


def test_count_tokens_for_an_anthropic_upstream_is_counted_there(
    live_gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream
) -> None:
    raw = anthropic_client(live_gateway, key).messages.with_raw_response.count_tokens(
        model="claude-test", messages=[{"role": "user", "content": "hi"}]
    )
    assert "x-gateway-token-count" not in raw.headers
    seen = fake_upstream.requests[-1]
    assert (seen.path, seen.body["model"]) == ("/v1/messages/count_tokens", "claude-up")
    # The fake's own count of what it received: the answer is the upstream's, untouched.
    counted = orjson.dumps([None, seen.body["messages"], None], option=orjson.OPT_SORT_KEYS)
    assert raw.parse().input_tokens == len(counted) // 4 + 1


def test_an_anthropic_upstream_error_reaches_the_client_in_anthropics_envelope(
    live_gateway: LiveGateway, key: IssuedKey
) -> None:
    with pytest.raises(anthropic.RateLimitError) as caught:
        anthropic_client(live_gateway, key).messages.create(
            model="claude-error-429", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


# --- OpenAI chat completions in front of an Anthropic upstream ---------------


def test_a_chat_completion_from_an_anthropic_upstream_is_translated_back(
    live_gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream, ledger: Ledger
) -> None:
    marker = unique_marker()
    answer = openai_client(live_gateway, key).chat.completions.create(
        model="claude-test", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": marker}]
    )
    assert answer.choices[0].message.content == TEXT
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (
        PROMPT_TOKENS,
        WORDS,
    )
    seen = seen_by_upstream(fake_upstream, marker)
    assert (seen.path, seen.headers["x-api-key"]) == ("/v1/messages", UPSTREAM_SECRET)
    assert seen.body["system"] == "Be brief."
    assert seen.body["messages"] == [{"role": "user", "content": marker}]
    assert seen.body["model"] == "claude-up" and seen.body["max_tokens"] > 0
    [record] = ledger.wait(key.key_id, 1)
    assert (record.endpoint, record.provider, record.cost_nanos) == (
        "chat.completions",
        "fake-anthropic",
        PROMPT_TOKENS * 3000 + WORDS * 15000,
    )


def test_a_streamed_chat_completion_from_an_anthropic_upstream_carries_usage_when_asked(
    live_gateway: LiveGateway, key: IssuedKey, ledger: Ledger
) -> None:
    chunks = list(
        openai_client(live_gateway, key).chat.completions.create(
            model="claude-test",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == TEXT
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == WORDS
    [record] = ledger.wait(key.key_id, 1)
    assert (record.stream, record.output_tokens, record.usage_estimated) == (True, WORDS, False)


def test_a_tool_call_round_trip_through_an_anthropic_upstream(
    live_gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream
) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "search",
                "description": "Search.",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
            },
        }
    ]
    client = openai_client(live_gateway, key)
    first = client.chat.completions.create(
        model="claude-test", tools=tools, messages=[{"role": "user", "content": "find w0"}]
    )
    [call] = first.choices[0].message.tool_calls or []
    assert first.choices[0].finish_reason == "tool_calls"
    assert (call.function.name, orjson.loads(call.function.arguments)) == ("search", {"q": "w0"})
    marker = unique_marker()
    second = client.chat.completions.create(
        model="claude-test",
        tools=tools,
        messages=[
            {"role": "user", "content": "find w0"},
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": marker},
        ],
    )
    assert second.choices[0].message.content == TEXT
    seen = seen_by_upstream(fake_upstream, marker)
    assert seen.body["messages"][1]["content"][0] == {
        "type": "tool_use",
        "id": call.id,
        "name": "search",
        "input": {"q": "w0"},
    }
    assert seen.body["messages"][2]["content"][0]["type"] == "tool_result"
    assert seen.body["messages"][2]["content"][0]["tool_use_id"] == call.id


# --- Responses and legacy completions ----------------------------------------


def test_responses_pass_through_to_a_provider_that_has_the_api(
    live_gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream, ledger: Ledger
) -> None:
    marker = unique_marker()
    response = openai_client(live_gateway, key).responses.create(model="gpt-test", input=marker)
    assert response.output_text == TEXT
    assert seen_by_upstream(fake_upstream, marker).path == "/v1/responses"
    [record] = ledger.wait(key.key_id, 1)
    assert (record.endpoint, record.input_tokens, record.output_tokens) == ("responses", PROMPT_TOKENS, WORDS)


def test_responses_are_translated_to_chat_for_a_provider_without_the_api(
    live_gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream, ledger: Ledger
) -> None:
    marker = unique_marker()
    client = openai_client(live_gateway, key)
    response = client.responses.create(model="compat-test", input=marker, instructions="Be brief.")
    assert response.output_text == TEXT
    assert response.usage is not None and response.usage.output_tokens == WORDS
    seen = seen_by_upstream(fake_upstream, marker)
    assert seen.path == "/v1/chat/completions"
    assert seen.body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": marker}]
    with client.responses.stream(model="compat-test", input="hi") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert final.output_text == TEXT and final.usage is not None and final.usage.output_tokens == WORDS
    records = ledger.wait(key.key_id, 2)
    assert [(r.endpoint, r.stream, r.output_tokens) for r in records] == [
        ("responses", False, WORDS),
        ("responses", True, WORDS),
    ]


def test_legacy_completions_pass_through_or_are_translated(
    live_gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream, ledger: Ledger
) -> None:
    client = openai_client(live_gateway, key)
    native = client.completions.create(model="gpt-test", prompt="say it", max_tokens=30)
    assert native.choices[0].text == TEXT
    assert fake_upstream.requests[-1].path == "/v1/completions"
    translated = client.completions.create(model="claude-test", prompt="say it", max_tokens=30)
    assert translated.choices[0].text == TEXT
    assert fake_upstream.requests[-1].path == "/v1/messages"
    records = ledger.wait(key.key_id, 2)
    assert [(r.endpoint, r.provider) for r in records] == [("completions", "fake"), ("completions", "fake-anthropic")]


# --- Ollama's API --------------------------------------------------------------


def test_ollama_chat_streams_ndjson_from_any_upstream(
    live_gateway: LiveGateway, key: IssuedKey, ledger: Ledger
) -> None:
    body = {"model": "claude-test", "messages": [{"role": "user", "content": "hi"}]}  # streamed: Ollama's default
    response = httpx.post(live_gateway.url + "/api/chat", json=body, headers=key.headers, timeout=20)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = [orjson.loads(line) for line in response.content.splitlines()]
    assert "".join(line["message"]["content"] for line in lines) == TEXT
    assert [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True]
    assert (lines[-1]["prompt_eval_count"], lines[-1]["eval_count"]) == (PROMPT_TOKENS, WORDS)
    [record] = ledger.wait(key.key_id, 1)
    assert (record.endpoint, record.output_tokens) == ("ollama.chat", WORDS)


def test_ollama_generate_and_tags(live_gateway: LiveGateway, key: IssuedKey) -> None:
    body = {"model": "gpt-test", "prompt": "hi", "stream": False}
    answer = httpx.post(live_gateway.url + "/api/generate", json=body, headers=key.headers, timeout=20).json()
    assert (answer["response"], answer["done"]) == (TEXT, True)
    tags = httpx.get(live_gateway.url + "/api/tags", headers=key.headers, timeout=20).json()
    assert "gpt-test" in [model["name"] for model in tags["models"]]


def test_ollama_errors_use_ollamas_shape(live_gateway: LiveGateway) -> None:
    response = httpx.post(
        live_gateway.url + "/api/chat",
        json={"model": "gpt-test", "messages": []},
        headers={"Authorization": "Bearer gw-nope"},
        timeout=20,
    )
    assert response.status_code == 401
    assert isinstance(response.json()["error"], str)


# --- The provider in the path or in the model name ------------------------------


def test_the_provider_in_the_path_routes_to_that_provider(
    live_gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream, ledger: Ledger
) -> None:
    marker = unique_marker()
    client = openai.OpenAI(base_url=live_gateway.url + "/fake-compat/v1", api_key=key.plaintext, max_retries=0)
    answer = client.chat.completions.create(model="some-upstream-model", messages=[{"role": "user", "content": marker}])
    assert answer.choices[0].message.content == TEXT
    seen = seen_by_upstream(fake_upstream, marker)
    assert (seen.path, seen.body["model"]) == ("/v1/chat/completions", "some-upstream-model")
    [record] = ledger.wait(key.key_id, 1)
    assert (record.public_model, record.provider) == ("fake-compat/some-upstream-model", "fake-compat")


def test_an_unknown_provider_in_the_path_is_a_clean_404(live_gateway: LiveGateway, key: IssuedKey) -> None:
    response = httpx.post(
        live_gateway.url + "/nobody/v1/chat/completions",
        headers=key.headers,
        timeout=20,
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


# --- Every translated stream is booked as complete ----------------------------

TRANSLATED_STREAMS = [
    ("/v1/messages", {"model": "gpt-test", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/responses", {"model": "compat-test", "input": "hi"}),
    ("/v1/completions", {"model": "claude-test", "prompt": "hi", "max_tokens": 30}),
    ("/v1/chat/completions", {"model": "claude-test", "messages": [{"role": "user", "content": "hi"}]}),
    ("/api/chat", {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}),
    ("/api/generate", {"model": "gpt-test", "prompt": "hi"}),
]


@pytest.mark.parametrize(("path", "body"), TRANSLATED_STREAMS, ids=[p for p, _ in TRANSLATED_STREAMS])
def test_a_complete_translated_stream_is_recorded_as_complete(
    live_gateway: LiveGateway, key: IssuedKey, ledger: Ledger, path: str, body: dict[str, Any]
) -> None:
    streamed = {**body, "stream": True}
    response = httpx.post(live_gateway.url + path, json=streamed, headers=key.headers, timeout=20)
    assert response.status_code == 200
    assert b"upstream_stream_incomplete" not in response.content
    [record] = ledger.wait(key.key_id, 1)
    assert (record.stream, record.status_code, record.error_code) == (True, 200, "")
    assert record.output_tokens == WORDS
