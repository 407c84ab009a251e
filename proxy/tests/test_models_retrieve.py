"""GET /v1/models/{id} through the official openai SDK, against the gateway under daphne."""

from collections.abc import Callable

import httpx
import openai
import pytest

from conftest import IssuedKey
from proxy.tests.live import LiveGateway

pytestmark = pytest.mark.usefixtures("live_gateway")


def client_for(gateway: LiveGateway, key: IssuedKey) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key.plaintext, max_retries=0, timeout=20)


def test_the_sdk_retrieves_a_routed_model_as_openais_model_object(live_gateway: LiveGateway, key: IssuedKey) -> None:
    model = client_for(live_gateway, key).models.retrieve("gpt-test")
    assert (model.id, model.object, model.owned_by) == ("gpt-test", "model", "fake")
    assert isinstance(model.created, int)


def test_a_name_with_slashes_reached_through_a_wildcard_route_is_retrieved(
    live_gateway: LiveGateway, key: IssuedKey
) -> None:
    model = client_for(live_gateway, key).models.retrieve("fake/some-model")
    assert (model.id, model.owned_by) == ("fake/some-model", "fake")
    raw = httpx.get(live_gateway.url + "/v1/models/fake/some-model", headers=key.headers, timeout=20)
    assert raw.json()["id"] == "fake/some-model"


def test_an_unrouted_model_is_openais_404_with_model_not_found(live_gateway: LiveGateway, key: IssuedKey) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client_for(live_gateway, key).models.retrieve("no-such-model")
    assert caught.value.code == "model_not_found"
    assert caught.value.body["message"] == "The model 'no-such-model' does not exist."  # type: ignore[index]


def test_a_model_the_key_may_not_use_is_404_as_if_it_did_not_exist(
    live_gateway: LiveGateway, issue_key: Callable[..., IssuedKey]
) -> None:
    limited = issue_key(allowed_models=["claude-*"])
    client = client_for(live_gateway, limited)
    assert client.models.retrieve("claude-test").id == "claude-test"
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("gpt-test")
    assert caught.value.code == "model_not_found"


def test_retrieving_a_model_needs_a_valid_key(live_gateway: LiveGateway) -> None:
    response = httpx.get(
        live_gateway.url + "/v1/models/gpt-test", headers={"Authorization": "Bearer sk-gw-nope"}, timeout=20
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_a_name_longer_than_any_model_can_have_is_a_400_in_openais_envelope(
    live_gateway: LiveGateway, key: IssuedKey
) -> None:
    response = httpx.get(live_gateway.url + "/v1/models/" + "m" * 201, headers=key.headers, timeout=20)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"
