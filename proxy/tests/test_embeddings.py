"""POST /v1/embeddings through the gateway under daphne."""

from typing import Any

import openai
import pytest

from conftest import UPSTREAM_SECRET, IssuedKey, Ledger, unique_marker
from proxy.tests.fake_upstream import EMBEDDING_TOKENS_PER_INPUT, FakeUpstream
from proxy.tests.live import LiveGateway

pytestmark = pytest.mark.usefixtures("live_gateway")


def client_for(gateway: LiveGateway, key: IssuedKey) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key.plaintext, max_retries=0)


def test_embeddings_are_forwarded_and_their_tokens_and_cost_recorded(
    live_gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream, ledger: Ledger
) -> None:
    marker = unique_marker()
    answer = client_for(live_gateway, key).embeddings.create(
        model="gpt-test", input=[marker, "second"], encoding_format="float"
    )
    assert [d.embedding for d in answer.data] == [[0.25, -0.5, 0.0], [0.25, -0.5, 1.0]]
    [seen] = [r for r in fake_upstream.requests if r.path == "/v1/embeddings" and marker in str(r.body)]
    assert seen.body == {"model": "gpt-up", "input": [marker, "second"], "encoding_format": "float"}
    assert seen.headers["Authorization"] == f"Bearer {UPSTREAM_SECRET}"
    [record] = ledger.wait(key.key_id, 1)
    assert (record.endpoint, record.input_tokens, record.output_tokens) == (
        "embeddings",
        2 * EMBEDDING_TOKENS_PER_INPUT,
        0,
    )
    assert record.cost_nanos == 2 * EMBEDDING_TOKENS_PER_INPUT * 150  # $0.15 per million input tokens


def test_identical_embeddings_are_served_from_the_cache(
    live_gateway: LiveGateway, issue_key: Any, fake_upstream: FakeUpstream, ledger: Ledger
) -> None:
    key = issue_key(cache_ttl_seconds=600)
    marker = unique_marker()
    client = client_for(live_gateway, key)
    first = client.embeddings.with_raw_response.create(model="gpt-test", input=marker)
    second = client.embeddings.with_raw_response.create(model="gpt-test", input=marker)
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("miss", "hit")
    assert second.parse().data[0].embedding == first.parse().data[0].embedding
    assert sum(marker in str(r.body) for r in fake_upstream.requests) == 1
    miss, hit = ledger.wait(key.key_id, 2)
    assert (hit.cache_hit, hit.cost_nanos, hit.saved_nanos, hit.endpoint) == (True, 0, miss.cost_nanos, "embeddings")


@pytest.mark.parametrize("body", [b'{"model": "gpt-test"}', b'{"model": "gpt-test", "input": ""}', b'{"input": "x"}'])
def test_an_embeddings_request_without_input_or_model_is_a_400(
    live_gateway: LiveGateway, key: IssuedKey, body: bytes
) -> None:
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(live_gateway.url + "/v1/embeddings", data=body, headers=key.headers)
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=10)
    assert error.value.code == 400
    assert json.loads(error.value.read())["error"]["code"] == "invalid_request"
