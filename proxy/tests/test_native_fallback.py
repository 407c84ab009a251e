"""A provider of kind `openai` whose server lacks /responses or /completions
(the fake's chat-only path answers 404 there): the call is translated to
chat completions instead of relaying the 404, the notes header says so, and
later calls to that provider are translated at once."""

import time
import uuid
from collections.abc import Callable
from typing import Any

import openai
import orjson
import pytest

from conftest import UPSTREAM_SECRET, IssuedKey, Ledger, unique_marker
from proxy.tests.fake_upstream import CHAT_ONLY_PREFIX, DEFAULT_WORDS, PROMPT_TOKENS, FakeUpstream
from proxy.tests.live import LiveGateway

TEXT = " ".join(DEFAULT_WORDS)
WORDS = len(DEFAULT_WORDS)
NOTES = "x-gateway-translation-notes"


def client(gateway: LiveGateway, key: IssuedKey) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key.plaintext, max_retries=0, timeout=20)


@pytest.fixture
def chat_only_model(
    live_gateway: LiveGateway, django_db_blocker: Any, fake_upstream: FakeUpstream, issue_key: Callable[..., IssuedKey]
) -> str:
    """A route to a fresh kind `openai` provider on the fake's chat-only path
    (fresh: what the gateway remembers is per provider), once the gateway
    under test serves it."""
    from proxy.services import provider_upsert, route_upsert

    name = f"chatonly-{uuid.uuid4().hex[:8]}"
    with django_db_blocker.unblock():
        provider, _ = provider_upsert(
            name=name, kind="openai", base_url=fake_upstream.chat_only_url, api_key=UPSTREAM_SECRET
        )
        route_upsert(model=name, provider=provider, upstream_model="gpt-up")
    probe = client(live_gateway, issue_key())  # chat works there: it shows when the route is live
    deadline = time.monotonic() + 10
    while True:
        try:
            probe.chat.completions.create(model=name, messages=[{"role": "user", "content": "probe"}])
            return name
        except openai.NotFoundError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def paths_seen(fake: FakeUpstream, marker: str) -> list[str]:
    return [r.path for r in fake.requests if marker in orjson.dumps(r.body).decode()]


def test_a_responses_call_whose_endpoint_is_missing_is_answered_through_chat_completions(
    live_gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream, ledger: Ledger, chat_only_model: str
) -> None:
    marker = unique_marker()
    raw = client(live_gateway, key).responses.with_raw_response.create(model=chat_only_model, input=marker)
    response = raw.parse()
    assert response.output_text == TEXT
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (PROMPT_TOKENS, WORDS)
    assert f"provider {chat_only_model} has no /responses, sent as chat completions" in raw.headers[NOTES]
    assert paths_seen(fake_upstream, marker) == [
        f"{CHAT_ONLY_PREFIX}/v1/responses",
        f"{CHAT_ONLY_PREFIX}/v1/chat/completions",
    ]
    [record] = ledger.wait(key.key_id, 1)
    assert (record.endpoint, record.public_model, record.status_code) == ("responses", chat_only_model, 200)
    assert (record.input_tokens, record.output_tokens) == (PROMPT_TOKENS, WORDS)


def test_after_one_fallback_the_provider_is_translated_at_once_and_still_says_so(
    live_gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream, ledger: Ledger, chat_only_model: str
) -> None:
    openai_client = client(live_gateway, key)
    openai_client.responses.create(model=chat_only_model, input=unique_marker())
    marker = unique_marker()
    raw = openai_client.responses.with_raw_response.create(model=chat_only_model, input=marker)
    assert raw.parse().output_text == TEXT
    assert "has no /responses" in raw.headers[NOTES]
    assert paths_seen(fake_upstream, marker) == [f"{CHAT_ONLY_PREFIX}/v1/chat/completions"]
    rows = ledger.wait(key.key_id, 2)
    assert [(r.endpoint, r.status_code, r.output_tokens) for r in rows] == [("responses", 200, WORDS)] * 2


def test_a_streamed_responses_call_whose_endpoint_is_missing_streams_the_translated_events(
    live_gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream, ledger: Ledger, chat_only_model: str
) -> None:
    marker = unique_marker()
    with client(live_gateway, key).responses.stream(model=chat_only_model, input=marker) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert final.output_text == TEXT
    assert paths_seen(fake_upstream, marker) == [
        f"{CHAT_ONLY_PREFIX}/v1/responses",
        f"{CHAT_ONLY_PREFIX}/v1/chat/completions",
    ]
    [record] = ledger.wait(key.key_id, 1)
    assert (record.endpoint, record.status_code) == ("responses", 200)
    assert (record.input_tokens, record.output_tokens) == (PROMPT_TOKENS, WORDS)


def test_a_legacy_completion_whose_endpoint_is_missing_is_answered_through_chat_completions(
    live_gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream, ledger: Ledger, chat_only_model: str
) -> None:
    marker = unique_marker()
    raw = client(live_gateway, key).completions.with_raw_response.create(model=chat_only_model, prompt=marker)
    assert raw.parse().choices[0].text == TEXT
    assert "has no /completions" in raw.headers[NOTES]
    assert paths_seen(fake_upstream, marker) == [
        f"{CHAT_ONLY_PREFIX}/v1/completions",
        f"{CHAT_ONLY_PREFIX}/v1/chat/completions",
    ]
    [record] = ledger.wait(key.key_id, 1)
    assert (record.endpoint, record.status_code, record.output_tokens) == ("completions", 200, WORDS)


def test_a_404_of_the_translation_too_is_relayed_and_not_remembered(
    live_gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream
) -> None:
    """A model the server does not know is a 404 on every endpoint: the
    client gets it, and the next call tries the native endpoint again."""
    openai_client = client(live_gateway, key)
    marker = unique_marker()
    with pytest.raises(openai.NotFoundError):
        openai_client.responses.create(model="fake/fake-error-404", input=marker)
    assert paths_seen(fake_upstream, marker) == ["/v1/responses", "/v1/chat/completions"]
    marker = unique_marker()
    assert openai_client.responses.create(model="fake/gpt-up", input=marker).output_text == TEXT
    assert paths_seen(fake_upstream, marker) == ["/v1/responses"]
