"""The official openai SDK against the gateway under daphne, with a fake upstream."""

from typing import Any

import openai
import pytest

from conftest import UPSTREAM_SECRET, IssuedKey, Ledger, unique_marker
from proxy.tests.fake_upstream import DEFAULT_WORDS, PROMPT_TOKENS, FakeUpstream
from proxy.tests.live import LiveGateway

pytestmark = pytest.mark.usefixtures("live_gateway")


def client_for(gateway: LiveGateway, key: IssuedKey) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key.plaintext, max_retries=0, timeout=20)


def upstream_request(fake: FakeUpstream, marker: str) -> Any:
    matches = [r for r in fake.requests if marker in str(r.body.get("messages"))]
    assert len(matches) == 1, f"the upstream saw {len(matches)} requests with {marker}"
    return matches[0]


def test_non_streamed_answer_arrives_intact(live_gateway: LiveGateway, key: IssuedKey) -> None:
    answer = client_for(live_gateway, key).chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "hello"}]
    )
    assert answer.choices[0].message.content == " ".join(DEFAULT_WORDS)
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.prompt_tokens == PROMPT_TOKENS


def test_upstream_receives_the_upstream_model_its_credential_and_the_body_as_sent(
    live_gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream
) -> None:
    marker = unique_marker()
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]
    client_for(live_gateway, key).chat.completions.create(
        model="gpt-test",
        messages=[{"role": "user", "content": marker}],
        tools=tools,
        response_format={"type": "json_object"},
        temperature=0.25,
        extra_body={"some_field_the_gateway_does_not_know": {"nested": [1, 2]}},
    )
    seen = upstream_request(fake_upstream, marker)
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["Authorization"] == f"Bearer {UPSTREAM_SECRET}"
    assert key.plaintext not in str(seen.headers)  # the virtual key never leaves the gateway
    assert seen.body == {
        "model": "gpt-up",
        "messages": [{"role": "user", "content": marker}],
        "tools": tools,
        "response_format": {"type": "json_object"},
        "temperature": 0.25,
        "some_field_the_gateway_does_not_know": {"nested": [1, 2]},
    }


def test_streamed_answer_arrives_chunk_by_chunk_in_order_without_the_usage_chunk_it_did_not_ask_for(
    live_gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream
) -> None:
    marker = unique_marker()
    stream = client_for(live_gateway, key).chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": marker}], stream=True
    )
    chunks = list(stream)
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert deltas == [(" " if i else "") + w for i, w in enumerate(DEFAULT_WORDS)]
    assert all(c.choices for c in chunks), "the usage-only chunk must be stripped"
    assert chunks[-1].choices[0].finish_reason == "stop"
    # The gateway asked for usage on the client's behalf.
    assert upstream_request(fake_upstream, marker).body["stream_options"] == {"include_usage": True}


def test_streamed_answer_keeps_the_usage_chunk_when_the_client_asks_for_it(
    live_gateway: LiveGateway, key: IssuedKey
) -> None:
    stream = client_for(live_gateway, key).chat.completions.create(
        model="gpt-test",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    last = list(stream)[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (PROMPT_TOKENS, len(DEFAULT_WORDS))


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_each_request_leaves_exactly_one_usage_record_with_its_tokens_and_cost(
    live_gateway: LiveGateway, key: IssuedKey, ledger: Ledger, stream: bool
) -> None:
    response = client_for(live_gateway, key).chat.completions.with_raw_response.create(
        model="gpt-test", messages=[{"role": "user", "content": "hi"}], stream=stream
    )
    if stream:
        list(response.parse())
    [record] = ledger.wait(key.key_id, 1)
    assert record.request_id == response.headers["x-request-id"]
    assert (record.tenant_id, record.public_model, record.upstream_model, record.provider) == (
        key.tenant_id,
        "gpt-test",
        "gpt-up",
        "fake",
    )
    assert (record.status_code, record.error_code, record.stream) == (200, "", stream)
    assert (record.input_tokens, record.cached_input_tokens, record.output_tokens, record.reasoning_tokens) == (
        PROMPT_TOKENS,
        0,
        len(DEFAULT_WORDS),
        0,
    )
    # 12 input tokens at $0.15/M + 20 output tokens at $0.60/M = $0.0000138
    assert record.cost_nanos == 13_800
    assert not record.usage_estimated and not record.client_disconnected
    assert record.latency_ms >= 0
    assert (record.ttft_ms is not None) == stream


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_cached_and_reasoning_tokens_are_billed_once_each_at_their_own_rates(
    live_gateway: LiveGateway, key: IssuedKey, ledger: Ledger, stream: bool
) -> None:
    response = client_for(live_gateway, key).chat.completions.create(
        model="fake/fake-cached", messages=[{"role": "user", "content": "hi"}], stream=stream
    )
    if stream:
        list(response)
    [record] = ledger.wait(key.key_id, 1)
    # OpenAI reports prompt_tokens=100 (40 of them cached), completion_tokens=30 (10 of them reasoning).
    assert (record.input_tokens, record.cached_input_tokens, record.output_tokens, record.reasoning_tokens) == (
        60,
        40,
        20,
        10,
    )
    # 60 x $2.50/M + 40 x $1.25/M + (20 + 10) x $10/M = $0.00015 + $0.00005 + $0.0003
    assert record.cost_nanos == 500_000


def test_a_stream_the_client_abandons_halfway_is_recorded_once_with_estimated_usage(
    live_gateway: LiveGateway, key: IssuedKey, ledger: Ledger, fake_upstream: FakeUpstream
) -> None:
    disconnects_before = fake_upstream.disconnects
    stream = client_for(live_gateway, key).chat.completions.create(
        model="fake/fake-slow", messages=[{"role": "user", "content": "x" * 400}], stream=True
    )
    received = []
    for chunk in stream:
        received.append(chunk)
        if len(received) == 4:
            break
    stream.close()

    [record] = ledger.wait(key.key_id, 1)
    assert record.client_disconnected and record.error_code == "client_disconnected"
    assert record.usage_estimated
    # 400 characters of prompt ~ 100 tokens (+4 for the message); at least the
    # words received so far were produced, never zero.
    assert record.input_tokens == 104
    assert 1 <= record.output_tokens < len(DEFAULT_WORDS)
    assert record.cost_nanos > 0
    # The gateway closed its upstream request rather than letting it run on.
    assert fake_upstream.wait_for_disconnects(disconnects_before + 1)


def test_models_lists_the_routes_the_key_may_use(
    live_gateway: LiveGateway, issue_key: Any, django_db_blocker: Any
) -> None:
    everything = client_for(live_gateway, issue_key())
    session_routes = {"budget-model", "claude-cached", "claude-test", "compat-test", "dead-model", "gpt-test"}
    listed = [(m.id, m.owned_by) for m in everything.models.list()]
    assert [(name, owner) for name, owner in listed if name in session_routes] == [
        ("budget-model", "fake"),
        ("claude-cached", "fake-anthropic"),
        ("claude-test", "fake-anthropic"),
        ("compat-test", "fake-compat"),
        ("dead-model", "dead"),
        ("gpt-test", "fake"),
    ]
    assert [name for name, _ in listed] == sorted(name for name, _ in listed)  # other tests add routes of their own
    limited = client_for(live_gateway, issue_key(allowed_models=["gpt-test", "fake/*"]))
    allowed = [(m.id, m.owned_by) for m in limited.models.list()]
    assert [(name, owner) for name, owner in allowed if name in session_routes] == [("gpt-test", "fake")]
    # Other tests add `fake/` models, and aliases, which a key may call when it may call their target.
    from proxy.models import ModelAlias

    with django_db_blocker.unblock():
        aliases = dict(ModelAlias.objects.values_list("pattern", "target_model"))
    assert all(
        name == "gpt-test" or name.startswith("fake/") or aliases.get(name) == "gpt-test" for name, _ in allowed
    ), allowed


def test_a_wildcard_route_passes_the_rest_of_the_name_upstream(
    live_gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream
) -> None:
    marker = unique_marker()
    client_for(live_gateway, key).chat.completions.create(
        model="fake/some-model-v2", messages=[{"role": "user", "content": marker}]
    )
    assert upstream_request(fake_upstream, marker).body["model"] == "some-model-v2"
