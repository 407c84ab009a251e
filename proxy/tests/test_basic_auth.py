"""The gateway key as the password of `Authorization: Basic`, for clients
that can only send a user and a password, on /v1 and Ollama's /api."""

import base64

import httpx
import ollama
import pytest

from accounts.auth import key_from_headers
from conftest import IssuedKey, Ledger
from proxy.tests.fake_upstream import DEFAULT_WORDS
from proxy.tests.live import LiveGateway

CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_the_key_is_read_from_the_password_of_basic_credentials_whatever_the_user() -> None:
    assert key_from_headers(basic("anyone", "sk-gw-abc")["Authorization"], "") == "sk-gw-abc"
    assert key_from_headers(basic("", "sk-gw-abc")["Authorization"], "") == "sk-gw-abc"
    assert key_from_headers(basic("sk-gw-abc", "")["Authorization"], "") == "sk-gw-abc"  # the key as the user


def test_basic_credentials_that_cannot_be_decoded_are_not_taken_for_a_missing_key() -> None:
    assert key_from_headers("Basic %%%not-base64", "") == "%%%not-base64"


def test_a_basic_header_with_the_key_as_password_is_served_and_metered_on_v1(
    live_gateway: LiveGateway, key: IssuedKey, ledger: Ledger
) -> None:
    response = httpx.post(
        live_gateway.url + "/v1/chat/completions", json=CHAT, headers=basic("me", key.plaintext), timeout=20
    )
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == " ".join(DEFAULT_WORDS)
    [record] = ledger.wait(key.key_id, 1)
    assert record.endpoint == "chat.completions"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", CHAT),
        ("/v1/messages", {**CHAT, "max_tokens": 10}),
        ("/api/chat", {**CHAT, "stream": False}),
    ],
)
def test_a_basic_header_with_a_wrong_key_is_401_in_the_envelope_of_the_api_called(
    live_gateway: LiveGateway, path: str, body: dict[str, object]
) -> None:
    response = httpx.post(live_gateway.url + path, json=body, headers=basic("me", "sk-gw-wrong"), timeout=20)
    assert response.status_code == 401
    data = response.json()
    # The key was read (and refused), not taken as missing.
    if path == "/v1/messages":
        assert data["type"] == "error"
        assert data["error"] == {"type": "authentication_error", "message": "Invalid or revoked API key."}
    elif path.startswith("/api/"):
        assert data == {"error": "Invalid or revoked API key.", "code": "invalid_api_key"}
    else:
        assert (data["error"]["code"], data["error"]["message"]) == ("invalid_api_key", "Invalid or revoked API key.")


def test_the_ollama_client_with_basic_auth_chats_through_the_gateway(live_gateway: LiveGateway, key: IssuedKey) -> None:
    client = ollama.Client(host=live_gateway.url, auth=("ollama", key.plaintext), timeout=20)
    answer = client.chat(model="gpt-test", messages=[{"role": "user", "content": "hi"}], stream=False)
    assert answer.message.content == " ".join(DEFAULT_WORDS)
