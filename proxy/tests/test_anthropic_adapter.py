"""The Anthropic adapter's requests and its stream observer (pure)."""

from typing import Any

import orjson
import pytest

from gateway.kernel.context import ProviderConfig, Usage
from proxy.providers.anthropic import ANTHROPIC_VERSION, AnthropicAdapter, AnthropicStreamObserver

PROVIDER = ProviderConfig(name="claude", kind="anthropic", base_url="https://api.anthropic.com/v1/", api_key="sk-ant-1")
BODY = {"model": "claude-public", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}


def test_a_message_request_goes_to_messages_with_the_upstream_model_and_the_body_as_sent() -> None:
    request, observer = AnthropicAdapter().messages_request(PROVIDER, "claude-sonnet-4-5", BODY, stream=False)
    assert request.url == "https://api.anthropic.com/v1/messages"
    assert orjson.loads(request.body) == {**BODY, "model": "claude-sonnet-4-5"}
    assert request.headers == {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "anthropic-version": ANTHROPIC_VERSION,
        "x-api-key": "sk-ant-1",
    }
    assert observer is None


def test_a_streamed_message_request_accepts_event_streams_and_comes_with_an_observer() -> None:
    request, observer = AnthropicAdapter().messages_request(PROVIDER, "m", {**BODY, "stream": True}, stream=True)
    assert request.headers["Accept"] == "text/event-stream"
    assert isinstance(observer, AnthropicStreamObserver)


def test_the_clients_version_and_beta_flags_travel_on_and_nothing_else_of_its_headers() -> None:
    client = {
        "Anthropic-Version": "2024-01-01",
        "anthropic-beta": "prompt-caching-2024-07-31",
        "x-api-key": "gw-client-key",
        "Authorization": "Bearer gw-client-key",
    }
    request, _ = AnthropicAdapter().messages_request(PROVIDER, "m", BODY, stream=False, client_headers=client)
    assert request.headers == {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "anthropic-version": "2024-01-01",
        "anthropic-beta": "prompt-caching-2024-07-31",
        "x-api-key": "sk-ant-1",
    }


def test_a_provider_without_a_key_sends_no_key_header() -> None:
    keyless = ProviderConfig(name="local", kind="anthropic", base_url="http://127.0.0.1:9/v1")
    request, _ = AnthropicAdapter().messages_request(keyless, "m", BODY, stream=False)
    assert "x-api-key" not in request.headers and "Authorization" not in request.headers


def test_a_count_tokens_request_goes_to_count_tokens_with_the_upstream_model() -> None:
    body = {"model": "claude-public", "messages": [{"role": "user", "content": "hi"}]}
    request = AnthropicAdapter().count_tokens_request(PROVIDER, "claude-sonnet-4-5", body, {"anthropic-beta": "b1"})
    assert request.url == "https://api.anthropic.com/v1/messages/count_tokens"
    assert orjson.loads(request.body) == {**body, "model": "claude-sonnet-4-5"}
    assert request.headers["anthropic-beta"] == "b1"
    assert request.headers["anthropic-version"] == ANTHROPIC_VERSION


def test_usage_from_a_message_counts_cache_reads_and_writes_apart() -> None:
    message = {
        "type": "message",
        "usage": {
            "input_tokens": 10,
            "cache_read_input_tokens": 20,
            "cache_creation_input_tokens": 30,
            "output_tokens": 5,
        },
    }
    assert AnthropicAdapter().usage_from_response(message) == Usage(
        input_tokens=10, cached_input_tokens=20, cache_write_5m_tokens=30, output_tokens=5
    )


@pytest.mark.parametrize("data", [{"input_tokens": 12}, [], "text"])
def test_an_answer_without_message_usage_has_none(data: Any) -> None:
    assert AnthropicAdapter().usage_from_response(data) is None


# --- the observer ----------------------------------------------------------------


def feed(observer: AnthropicStreamObserver, *events: dict[str, Any]) -> list[bool]:
    return [observer.observe(orjson.dumps(event)) for event in events]


def message_start(**usage: Any) -> dict[str, Any]:
    return {
        "type": "message_start",
        "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "usage": usage},
    }


def block_delta(delta_type: str, field: str, text: str) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": 0, "delta": {"type": delta_type, field: text}}


def test_the_observer_takes_input_from_message_start_and_output_from_message_delta() -> None:
    observer = AnthropicStreamObserver()
    kept = feed(
        observer,
        message_start(input_tokens=25, cache_read_input_tokens=0, output_tokens=1),
        {"type": "ping"},
        block_delta("text_delta", "text", "Hello"),
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 15}},
    )
    assert observer.finished is False
    feed(observer, {"type": "message_stop"})
    assert kept == [True, True, True, True]
    assert observer.finished is True
    assert observer.usage == Usage(input_tokens=25, output_tokens=15)


def test_the_observer_splits_cache_writes_into_5_minute_and_1_hour() -> None:
    observer = AnthropicStreamObserver()
    feed(
        observer,
        message_start(
            input_tokens=5,
            cache_read_input_tokens=100,
            cache_creation_input_tokens=70,
            output_tokens=1,
            cache_creation={"ephemeral_5m_input_tokens": 30, "ephemeral_1h_input_tokens": 40},
        ),
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 9}},
    )
    assert observer.usage == Usage(
        input_tokens=5, cached_input_tokens=100, cache_write_5m_tokens=30, cache_write_1h_tokens=40, output_tokens=9
    )


def test_input_counts_repeated_in_message_delta_win_and_nulls_there_do_not_erase() -> None:
    observer = AnthropicStreamObserver()
    feed(
        observer,
        message_start(input_tokens=3, cache_read_input_tokens=0, output_tokens=1),
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {
                "input_tokens": 8,
                "cache_read_input_tokens": 50,
                "cache_creation_input_tokens": None,
                "output_tokens": 12,
            },
        },
    )
    assert observer.usage == Usage(input_tokens=8, cached_input_tokens=50, output_tokens=12)


def test_the_observer_counts_text_thinking_and_tool_input_characters() -> None:
    observer = AnthropicStreamObserver()
    feed(
        observer,
        block_delta("thinking_delta", "thinking", "hmm"),
        block_delta("signature_delta", "signature", "c2lnbmF0dXJl"),
        block_delta("text_delta", "text", "Hello"),
        block_delta("input_json_delta", "partial_json", '{"q":'),
    )
    assert observer.output_chars == len("hmm") + len("Hello") + len('{"q":')


def test_a_stream_cut_before_message_delta_keeps_exact_input_and_estimates_output_from_characters() -> None:
    observer = AnthropicStreamObserver()
    feed(observer, message_start(input_tokens=25, output_tokens=1), block_delta("text_delta", "text", "x" * 40))
    assert observer.usage == Usage(input_tokens=25, output_tokens=10)
    assert observer.finished is False


def test_a_stream_without_message_start_has_no_usage_to_report() -> None:
    observer = AnthropicStreamObserver()
    feed(observer, block_delta("text_delta", "text", "Hello"))
    assert observer.usage is None and observer.output_chars == 5


def test_the_observer_passes_error_events_and_what_it_cannot_parse() -> None:
    observer = AnthropicStreamObserver()
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert feed(observer, error) == [True]
    assert observer.observe(b"{not json") is True
    assert observer.observe(b"[1, 2]") is True
    assert observer.usage is None and observer.finished is False
