"""Upstream answers the gateway will not relay as they are: larger than
PROXY_MAX_RESPONSE_BYTES (refused, or a stream cut), or a `stream: true`
request answered with something other than server-sent events."""

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from conftest import IssuedKey, Ledger
from gateway.kernel.sse import event_data
from proxy.tests.live import LiveGateway

LIMIT = 200_000


@pytest.fixture(scope="module")
def gateway(gateway_config: None) -> Iterator[LiveGateway]:
    live = LiveGateway(env={"PROXY_MAX_RESPONSE_BYTES": str(LIMIT)}).start()
    yield live
    live.terminate()


def post(gateway: LiveGateway, key: IssuedKey, path: str, body: dict[str, Any]) -> httpx.Response:
    headers = {**key.headers, "anthropic-version": "2023-06-01"}
    return httpx.post(gateway.url + path, json=body, headers=headers, timeout=20)


def chat(model: str, *, stream: bool = False) -> dict[str, Any]:
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}


def data_events(body: bytes) -> list[Any]:
    events = [event_data(e + b"\n\n") for e in body.replace(b"\r\n", b"\n").split(b"\n\n") if e.strip()]
    return [orjson.loads(d) if d and d != b"[DONE]" else d for d in events]


@pytest.mark.parametrize("fault", ["fake-big", "fake-bigchunked"])
def test_a_non_streamed_answer_larger_than_the_limit_is_refused_with_502(
    gateway: LiveGateway, key: IssuedKey, ledger: Ledger, fault: str
) -> None:
    response = post(gateway, key, "/v1/chat/completions", chat(f"fake/{fault}-{LIMIT * 3}"))
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_response_too_large"
    assert f"{LIMIT} bytes" in error["message"]
    [record] = ledger.wait(key.key_id, 1)
    assert (record.status_code, record.error_code) == (502, "upstream_response_too_large")


def test_an_answer_under_the_limit_passes(gateway: LiveGateway, key: IssuedKey) -> None:
    response = post(gateway, key, "/v1/chat/completions", chat(f"fake/fake-bigchunked-{LIMIT // 2}"))
    assert response.status_code == 200
    assert len(response.json()["choices"][0]["message"]["content"]) == LIMIT // 2


def test_a_stream_larger_than_the_limit_is_cut_with_an_error_event(
    gateway: LiveGateway, key: IssuedKey, ledger: Ledger
) -> None:
    response = post(gateway, key, "/v1/chat/completions", chat(f"fake/fake-big-{LIMIT * 3}", stream=True))
    assert response.status_code == 200
    assert len(response.content) < LIMIT * 2
    events = data_events(response.content)
    assert events[-1]["error"]["code"] == "upstream_response_too_large"
    assert b"[DONE]" not in events
    [record] = ledger.wait(key.key_id, 1)
    assert record.error_code == "upstream_response_too_large"


def test_a_translated_stream_larger_than_the_limit_ends_with_the_clients_error_event(
    gateway: LiveGateway, key: IssuedKey
) -> None:
    body = {**chat(f"fake/fake-big-{LIMIT * 3}", stream=True), "max_tokens": 100}
    response = post(gateway, key, "/v1/messages", body)
    assert response.status_code == 200
    last = response.content.strip().split(b"\n\n")[-1]
    assert last.startswith(b"event: error\n")
    assert orjson.loads(event_data(last) or b"")["error"]["type"] == "api_error"
    assert b"larger than the gateway's limit" in last


def test_a_stream_request_answered_with_a_json_error_gets_that_error(
    gateway: LiveGateway, key: IssuedKey, ledger: Ledger
) -> None:
    response = post(gateway, key, "/v1/chat/completions", chat("fake/fake-notsse-error", stream=True))
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert (error["code"], "You exceeded your current quota." in error["message"]) == ("quota", True)
    [record] = ledger.wait(key.key_id, 1)
    assert (record.status_code, record.error_code) == (502, "quota")


def test_a_stream_request_answered_with_a_whole_answer_is_refused_as_not_streamed(
    gateway: LiveGateway, key: IssuedKey
) -> None:
    response = post(gateway, key, "/v1/chat/completions", chat("fake/fake-notsse-json", stream=True))
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_not_streamed"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", chat("fake/fake-notsse-html", stream=True)),
        ("/v1/messages", {**chat("fake/fake-notsse-html", stream=True), "max_tokens": 100}),
    ],
)
def test_a_stream_request_answered_with_html_is_a_bad_response_in_the_clients_envelope(
    gateway: LiveGateway, key: IssuedKey, path: str, body: dict[str, Any]
) -> None:
    response = post(gateway, key, path, body)
    assert response.status_code == 502
    assert b"<html>" not in response.content
    payload = response.json()
    if path == "/v1/messages":
        assert payload["type"] == "error" and "text/html" in payload["error"]["message"]
    else:
        assert payload["error"]["code"] == "upstream_bad_response"
