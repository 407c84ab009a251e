"""Every refusal is a clear error in the OpenAI envelope with a stable code."""

import datetime as dt
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import openai
import pytest

from conftest import UPSTREAM_SECRET, IssuedKey, Ledger
from proxy.tests.live import LiveGateway

pytestmark = pytest.mark.usefixtures("live_gateway")

CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}


def call(
    gateway: LiveGateway, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any, dict[str, Any]]:
    request = urllib.request.Request(gateway.url + path, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, response.headers, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.headers, json.loads(error.read())


def chat(gateway: LiveGateway, key: IssuedKey | None, body: Any = CHAT) -> tuple[int, Any, dict[str, Any]]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **(key.headers if key else {})}
    return call(gateway, "/v1/chat/completions", raw, headers)


def assert_openai_error(body: dict[str, Any], code: str, type_: str) -> None:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    assert (body["error"]["code"], body["error"]["type"]) == (code, type_)


def test_a_request_without_a_key_is_refused_with_401(live_gateway: LiveGateway) -> None:
    status, headers, body = chat(live_gateway, None)
    assert status == 401
    assert_openai_error(body, "missing_api_key", "authentication_error")
    assert headers["x-request-id"].startswith("req_")


@pytest.mark.parametrize("header", ["Authorization", "x-api-key"])
def test_an_unknown_key_is_refused_with_401_in_either_header(live_gateway: LiveGateway, header: str) -> None:
    value = "sk-gw-not-a-real-key"
    status, _, body = call(
        live_gateway,
        "/v1/chat/completions",
        json.dumps(CHAT).encode(),
        {header: f"Bearer {value}" if header == "Authorization" else value},
    )
    assert status == 401
    assert_openai_error(body, "invalid_api_key", "authentication_error")
    assert value not in json.dumps(body)


def test_the_x_api_key_header_authenticates_like_bearer(live_gateway: LiveGateway, key: IssuedKey) -> None:
    status, _, _ = call(live_gateway, "/v1/chat/completions", json.dumps(CHAT).encode(), {"x-api-key": key.plaintext})
    assert status == 200


def test_a_revoked_key_stops_working_within_seconds_in_the_serving_process(
    live_gateway: LiveGateway, key: IssuedKey, django_db_blocker: Any
) -> None:
    from accounts.models import ApiKey
    from accounts.services import api_key_revoke

    assert chat(live_gateway, key)[0] == 200  # now cached in the gateway's snapshot
    with django_db_blocker.unblock():  # revoked from this process, as a CLI or admin would
        api_key_revoke(api_key=ApiKey.objects.get(pk=key.key_id))
    deadline = time.monotonic() + 5
    while (status := chat(live_gateway, key)[0]) == 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    status, _, body = chat(live_gateway, key)
    assert status == 401
    assert_openai_error(body, "invalid_api_key", "authentication_error")


def test_an_expired_key_is_refused_with_401(live_gateway: LiveGateway, issue_key: Callable[..., IssuedKey]) -> None:
    expired = issue_key(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    status, _, body = chat(live_gateway, expired)
    assert status == 401
    assert_openai_error(body, "expired_api_key", "authentication_error")


def test_a_model_the_key_may_not_use_is_refused_with_403(
    live_gateway: LiveGateway, issue_key: Callable[..., IssuedKey]
) -> None:
    status, _, body = chat(live_gateway, issue_key(allowed_models=["fake/*"]))
    assert status == 403
    assert_openai_error(body, "model_not_allowed", "permission_error")
    assert body["error"]["param"] == "model"


def test_an_unknown_model_is_refused_with_404(live_gateway: LiveGateway, key: IssuedKey) -> None:
    status, _, body = chat(live_gateway, key, {**CHAT, "model": "no-such-model"})
    assert status == 404
    assert_openai_error(body, "model_not_found", "not_found_error")


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        (b"{not json", "invalid_json", None),
        (b"", "invalid_request", None),
        (b"[1, 2]", "invalid_request", None),
        (b'{"model": "gpt-test"}', "invalid_request", "messages"),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', "invalid_request", "model"),
        (b'{"model": 7, "messages": [{"role": "user", "content": "hi"}]}', "invalid_request", "model"),
        (b'{"model": "gpt-test", "messages": [], "stream": true}', "invalid_request", "messages"),
        (b'{"model": "gpt-test", "messages": [{"role": "user"}], "stream": "yes"}', "invalid_request", "stream"),
        (b'{"model": "gpt-test", "messages": [{"role": "user", "content": "\xff"}]}', "invalid_json", None),
    ],
    ids=[
        "malformed",
        "empty",
        "array",
        "no-messages",
        "no-model",
        "model-not-string",
        "empty-messages",
        "stream-not-bool",
        "invalid-utf8",
    ],
)
def test_a_body_that_is_not_a_chat_request_is_refused_with_400(
    live_gateway: LiveGateway, key: IssuedKey, body: bytes, code: str, param: str | None
) -> None:
    status, _, answer = chat(live_gateway, key, body)
    assert status == 400
    assert_openai_error(answer, code, "invalid_request_error")
    assert answer["error"]["param"] == param


def test_a_body_over_the_limit_is_refused_with_413(live_gateway: LiveGateway, key: IssuedKey) -> None:
    big = json.dumps({**CHAT, "messages": [{"role": "user", "content": "x" * (1024 * 1024 + 1)}]}).encode()
    status, _, body = chat(live_gateway, key, big)
    assert status == 413
    assert_openai_error(body, "request_too_large", "request_too_large")


def test_an_unreachable_upstream_is_a_502_and_is_recorded(
    live_gateway: LiveGateway, key: IssuedKey, ledger: Ledger
) -> None:
    status, _, body = chat(live_gateway, key, {**CHAT, "model": "dead-model"})
    assert status == 502
    assert_openai_error(body, "upstream_unreachable", "api_error")
    assert "127.0.0.1" not in body["error"]["message"]  # no internal addresses
    [record] = ledger.wait(key.key_id, 1)
    assert (record.status_code, record.error_code, record.cost_nanos) == (502, "upstream_unreachable", 0)


def test_an_upstream_that_does_not_answer_in_time_is_a_504_and_is_recorded(
    live_gateway: LiveGateway, key: IssuedKey, ledger: Ledger
) -> None:
    started = time.monotonic()
    status, _, body = chat(live_gateway, key, {**CHAT, "model": "fake/fake-hang"})
    assert status == 504
    assert time.monotonic() - started < 10  # PROXY_READ_TIMEOUT is 2 s in the test server
    assert_openai_error(body, "upstream_timeout", "api_error")
    [record] = ledger.wait(key.key_id, 1)
    assert (record.status_code, record.error_code) == (504, "upstream_timeout")


def test_an_upstream_error_reaches_the_client_with_its_status_headers_and_message_but_no_secret(
    live_gateway: LiveGateway, key: IssuedKey, ledger: Ledger
) -> None:
    status, headers, body = chat(live_gateway, key, {**CHAT, "model": "fake/fake-error-429"})
    assert status == 429
    assert headers["Retry-After"] == "7"
    assert_openai_error(body, "fake_429", "rate_limit_error")
    assert "fake failure 429" in body["error"]["message"]
    assert UPSTREAM_SECRET not in body["error"]["message"]
    [record] = ledger.wait(key.key_id, 1)
    assert (record.status_code, record.error_code) == (429, "fake_429")


def test_an_upstream_error_without_json_is_wrapped_in_the_envelope(live_gateway: LiveGateway, key: IssuedKey) -> None:
    status, _, body = chat(live_gateway, key, {**CHAT, "model": "fake/fake-plain-error"})
    assert status == 500
    assert_openai_error(body, "upstream_error", "api_error")


def test_the_provider_rejecting_the_gateways_credential_is_a_502_not_the_clients_401(
    live_gateway: LiveGateway, key: IssuedKey
) -> None:
    status, _, body = chat(live_gateway, key, {**CHAT, "model": "fake/fake-error-401"})
    assert status == 502
    assert_openai_error(body, "upstream_auth_failed", "api_error")


def test_the_sdk_raises_its_own_typed_errors(live_gateway: LiveGateway, key: IssuedKey) -> None:
    bad = openai.OpenAI(base_url=live_gateway.url + "/v1", api_key="sk-gw-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as auth:
        bad.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
    assert auth.value.code == "invalid_api_key"
    good = openai.OpenAI(base_url=live_gateway.url + "/v1", api_key=key.plaintext, max_retries=0)
    with pytest.raises(openai.NotFoundError) as missing:
        good.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.code == "model_not_found"


def test_an_unknown_api_path_answers_404_in_the_envelope(live_gateway: LiveGateway, key: IssuedKey) -> None:
    status, _, body = call(live_gateway, "/v1/no/such/path", None, key.headers)
    assert status == 404
    assert_openai_error(body, "not_found", "not_found_error")


def test_health_and_readiness(live_gateway: LiveGateway) -> None:
    assert call(live_gateway, "/healthz")[:3:2] == (200, {"status": "ok"})
    assert call(live_gateway, "/readyz")[:3:2] == (200, {"status": "ok", "checks": {"database": True}})


def test_no_key_material_reaches_the_server_log(live_gateway: LiveGateway, key: IssuedKey) -> None:
    chat(live_gateway, key)
    chat(live_gateway, key, {**CHAT, "model": "fake/fake-error-500"})
    log = live_gateway.log()
    assert key.plaintext not in log
    assert UPSTREAM_SECRET not in log


def test_a_wrong_method_answers_405_in_the_envelope(live_gateway: LiveGateway, key: IssuedKey) -> None:
    status, headers, body = call(live_gateway, "/v1/chat/completions", None, key.headers)
    assert status == 405
    assert headers["Allow"] == "POST"
    assert_openai_error(body, "method_not_allowed", "invalid_request_error")


@pytest.mark.parametrize("model", ["gpt-" + "x" * 300, "gpt-test\u0000"], ids=["too-long", "control-character"])
def test_a_model_name_the_ledger_could_not_store_is_refused_with_400(
    live_gateway: LiveGateway, key: IssuedKey, model: str
) -> None:
    status, _, body = chat(live_gateway, key, {**CHAT, "model": model})
    assert status == 400
    assert_openai_error(body, "invalid_request", "invalid_request_error")


@pytest.mark.parametrize("path", ["/v1/messages", "/fake-anthropic/v1/messages"])
def test_a_messages_call_refused_before_it_is_parsed_answers_in_anthropics_envelope(
    live_gateway: LiveGateway, key: IssuedKey, path: str
) -> None:
    """A body over the limit is refused before Django reads it; the client
    called Anthropic's API, through the provider in the path or not, and its
    SDK reads only Anthropic's envelope."""
    big = json.dumps(
        {"model": "claude-test", "max_tokens": 5, "messages": [{"role": "user", "content": "x" * (1024 * 1024 + 1)}]}
    )
    status, _, body = call(live_gateway, path, big.encode(), {"Content-Type": "application/json", **key.headers})
    assert status == 413
    assert body["type"] == "error"
    assert body["error"]["type"] == "request_too_large"
