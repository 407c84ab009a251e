"""Ollama's /api/show, /api/ps, /api/embed and /api/embeddings through the
real `ollama` client against the gateway under daphne, and Ollama's JSON 404
for every other /api/ path."""

import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import ollama
import orjson
import pytest
from django.http import HttpResponse

from conftest import UPSTREAM_SECRET, IssuedKey, Ledger, unique_marker
from proxy.compat import _as_ollama
from proxy.tests.fake_upstream import EMBEDDING_TOKENS_PER_INPUT, FakeUpstream
from proxy.tests.live import LiveGateway

pytestmark = pytest.mark.usefixtures("live_gateway")


def client_for(gateway: LiveGateway, key: IssuedKey) -> ollama.Client:
    return ollama.Client(host=gateway.url, headers=key.headers, timeout=20)


def seen_by_upstream(fake: FakeUpstream, marker: str) -> Any:
    [seen] = [r for r in fake.requests if r.path == "/v1/embeddings" and marker in str(r.body)]
    return seen


# --- /api/show -------------------------------------------------------------------


def test_the_ollama_client_shows_a_routed_model(live_gateway: LiveGateway, key: IssuedKey) -> None:
    shown = client_for(live_gateway, key).show("gpt-test")
    assert shown.details is not None and (shown.details.family, shown.details.families) == ("fake", ["fake"])
    assert shown.capabilities == ["completion"]
    assert shown.modelinfo == {"general.architecture": "fake", "general.basename": "gpt-test"}
    assert (shown.modelfile, shown.template, shown.parameters) == ("", "", "")


def test_show_takes_the_older_name_field_and_names_reached_through_a_wildcard_route(
    live_gateway: LiveGateway, key: IssuedKey
) -> None:
    response = httpx.post(live_gateway.url + "/api/show", json={"name": "fake/any-model"}, headers=key.headers)
    assert response.status_code == 200
    assert response.json()["model_info"]["general.basename"] == "fake/any-model"


def test_show_of_a_model_not_routed_is_ollamas_404(live_gateway: LiveGateway, key: IssuedKey) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        client_for(live_gateway, key).show("no-such-model")
    assert (caught.value.status_code, caught.value.error) == (404, "model 'no-such-model' not found")


def test_show_of_a_model_the_key_may_not_use_is_the_same_404(
    live_gateway: LiveGateway, issue_key: Callable[..., IssuedKey]
) -> None:
    limited = issue_key(allowed_models=["claude-*"])
    client = client_for(live_gateway, limited)
    assert client.show("claude-test").details is not None
    with pytest.raises(ollama.ResponseError) as caught:
        client.show("gpt-test")
    assert (caught.value.status_code, caught.value.error) == (404, "model 'gpt-test' not found")


def test_show_without_a_model_or_with_a_wrong_method_answers_in_ollamas_shape(
    live_gateway: LiveGateway, key: IssuedKey
) -> None:
    missing = httpx.post(live_gateway.url + "/api/show", json={}, headers=key.headers)
    assert missing.status_code == 400 and missing.json()["error"].startswith("'model' is required")
    wrong = httpx.get(live_gateway.url + "/api/show", headers=key.headers)
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert wrong.json()["code"] == "method_not_allowed"


def test_show_needs_a_valid_key(live_gateway: LiveGateway) -> None:
    response = httpx.post(live_gateway.url + "/api/show", json={"model": "gpt-test"})
    assert response.status_code == 401
    assert response.json()["code"] == "missing_api_key"


# --- /api/ps ---------------------------------------------------------------------


def test_ps_lists_the_models_the_key_may_use_as_loaded(
    live_gateway: LiveGateway, issue_key: Callable[..., IssuedKey]
) -> None:
    limited = issue_key(allowed_models=["claude-*"])
    running = client_for(live_gateway, limited).ps()
    names = [model.name for model in running.models]
    assert "claude-test" in names and "gpt-test" not in names
    first = running.models[0]
    assert first.expires_at is not None and first.expires_at > datetime.now(UTC)
    assert first.details is not None and first.details.family == "fake-anthropic"


# --- /api/embed and /api/embeddings ----------------------------------------------


def test_embed_goes_through_the_models_embeddings_route_and_is_metered(
    live_gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream, ledger: Ledger
) -> None:
    marker = unique_marker()
    answer = client_for(live_gateway, key).embed(model="gpt-test", input=[marker, "second"])
    assert answer.model == "gpt-test"
    assert answer.embeddings == [[0.25, -0.5, 0.0], [0.25, -0.5, 1.0]]
    assert answer.prompt_eval_count == 2 * EMBEDDING_TOKENS_PER_INPUT
    seen = seen_by_upstream(fake_upstream, marker)
    assert seen.body == {"model": "gpt-up", "input": [marker, "second"]}
    assert seen.headers["Authorization"] == f"Bearer {UPSTREAM_SECRET}"
    [record] = ledger.wait(key.key_id, 1)
    assert (record.endpoint, record.public_model, record.input_tokens) == (
        "embeddings",
        "gpt-test",
        2 * EMBEDDING_TOKENS_PER_INPUT,
    )
    assert record.cost_nanos == 2 * EMBEDDING_TOKENS_PER_INPUT * 150  # $0.15 per million input tokens


def test_the_legacy_embeddings_endpoint_sends_its_prompt_as_one_input(
    live_gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream, ledger: Ledger
) -> None:
    marker = unique_marker()
    answer = client_for(live_gateway, key).embeddings(model="gpt-test", prompt=marker)
    assert answer.embedding == [0.25, -0.5, 0.0]
    assert seen_by_upstream(fake_upstream, marker).body == {"model": "gpt-up", "input": marker}
    [record] = ledger.wait(key.key_id, 1)
    assert (record.endpoint, record.input_tokens) == ("embeddings", EMBEDDING_TOKENS_PER_INPUT)


def test_embed_fields_openai_lacks_are_dropped_and_said_so(
    live_gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream
) -> None:
    marker = unique_marker()
    body = {"model": "gpt-test", "input": marker, "truncate": True, "keep_alive": "5m", "dimensions": 3}
    response = httpx.post(live_gateway.url + "/api/embed", json=body, headers=key.headers, timeout=20)
    assert response.status_code == 200
    assert response.headers["x-gateway-translation-notes"] == "dropped: truncate; dropped: keep_alive"
    assert seen_by_upstream(fake_upstream, marker).body == {"model": "gpt-up", "input": marker, "dimensions": 3}


def test_identical_embeds_are_answered_from_the_cache_in_ollamas_shape(
    live_gateway: LiveGateway, issue_key: Callable[..., IssuedKey], fake_upstream: FakeUpstream
) -> None:
    key = issue_key(cache_ttl_seconds=600)
    body = {"model": "gpt-test", "input": unique_marker()}
    first, second = (
        httpx.post(live_gateway.url + "/api/embed", json=body, headers=key.headers, timeout=20) for _ in range(2)
    )
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("miss", "hit")
    assert second.json()["embeddings"] == first.json()["embeddings"] == [[0.25, -0.5, 0.0]]
    assert sum(body["input"] in str(r.body) for r in fake_upstream.requests) == 1


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/api/embed", {"model": "gpt-test"}, 400, "invalid_request"),
        ("/api/embeddings", {"model": "gpt-test", "prompt": ""}, 400, "invalid_request"),
        ("/api/embed", {"model": "no-such-model", "input": "x"}, 404, "model_not_found"),
        ("/api/embed", {"model": "claude-test", "input": "x"}, 400, "unsupported_endpoint"),
    ],
)
def test_embed_refusals_are_ollama_errors(
    live_gateway: LiveGateway, key: IssuedKey, path: str, body: dict[str, Any], status: int, code: str
) -> None:
    response = httpx.post(live_gateway.url + path, json=body, headers=key.headers, timeout=20)
    assert response.status_code == status
    data = response.json()
    assert isinstance(data["error"], str) and data["code"] == code


def test_embed_is_held_to_the_keys_rate_limit(live_gateway: LiveGateway, issue_key: Callable[..., IssuedKey]) -> None:
    client = client_for(live_gateway, issue_key(rpm_limit=1))
    client.embed(model="gpt-test", input="once")
    with pytest.raises(ollama.ResponseError) as caught:
        client.embed(model="gpt-test", input="twice")
    assert caught.value.status_code == 429


def test_embed_is_refused_once_the_keys_budget_is_spent(
    live_gateway: LiveGateway, key: IssuedKey, django_db_blocker: Any
) -> None:
    from accounts.models import ApiKey
    from billing.services import budget_set

    with django_db_blocker.unblock():
        budget_set(limit_usd=Decimal("0.000001"), period="day", api_key=ApiKey.objects.get(pk=key.key_id))
    client = client_for(live_gateway, key)
    deadline = time.monotonic() + 10  # the serving process sees the budget within its config poll
    while True:
        try:
            client.embed(model="gpt-test", input="x " * 200)
        except ollama.ResponseError as exc:
            assert exc.status_code == 429
            break
        assert time.monotonic() < deadline, "the budget never refused a request"


def test_an_upstream_error_in_openais_envelope_becomes_ollamas() -> None:
    openai_error = {"error": {"message": "fake failure 500", "type": "server_error", "param": None, "code": "fake_500"}}
    upstream = HttpResponse(orjson.dumps(openai_error), status=500, content_type="application/json")
    upstream["x-request-id"] = "req_1"
    answer = _as_ollama(upstream, lambda data: data)
    assert (answer.status_code, answer["x-request-id"]) == (500, "req_1")
    assert orjson.loads(answer.content) == {"error": "fake failure 500", "code": "fake_500"}  # type: ignore[attr-defined]


def test_an_embeddings_answer_of_the_wrong_shape_is_a_502() -> None:
    from proxy.translate.ollama_embed_to_embeddings.response import embeddings_response_to_ollama_embeddings

    upstream = HttpResponse(b'{"data": "nope"}', content_type="application/json")
    answer = _as_ollama(upstream, embeddings_response_to_ollama_embeddings)
    assert answer.status_code == 502
    assert orjson.loads(answer.content)["code"] == "upstream_bad_response"  # type: ignore[attr-defined]


# --- every other /api/ path ------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/pull"),
        ("GET", "/api/pull"),
        ("DELETE", "/api/delete"),
        ("POST", "/api/blobs/sha256:00"),
        ("GET", "/api/"),
    ],
)
def test_an_unknown_api_path_is_ollamas_json_404(
    live_gateway: LiveGateway, key: IssuedKey, method: str, path: str
) -> None:
    response = httpx.request(method, live_gateway.url + path, headers=key.headers, json={}, timeout=20)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"].startswith(f"{path} is not served here")


def test_the_ollama_client_sees_an_unserved_endpoint_as_a_response_error(
    live_gateway: LiveGateway, key: IssuedKey
) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        client_for(live_gateway, key).delete("gpt-test")
    assert caught.value.status_code == 404 and "/api/delete is not served here" in caught.value.error


def test_the_management_api_under_api_still_answers(live_gateway: LiveGateway) -> None:
    response = httpx.get(live_gateway.url + "/api/tenants", timeout=20)
    assert response.status_code == 401  # staff only, not a 404
