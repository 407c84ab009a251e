"""Bad input is a 4xx in the API's envelope with a stable code, never a 500,
and the gateway answers the next good request as before.

What `test_errors.py` already covers (malformed JSON, an empty body, a JSON
array, missing or non-string `model`, empty `messages`, a `stream` of "yes",
invalid UTF-8 inside a JSON string, a body over the limit with a
Content-Length, GET on a POST route, GET on an unknown path) is not repeated
here. Requests go out through http.client, which sends any bytes,
method and header it is given.
"""

import http.client
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from conftest import IssuedKey
from proxy.tests.fake_upstream import FakeUpstream
from proxy.tests.live import LiveGateway

pytestmark = pytest.mark.usefixtures("live_gateway")

CHAT_PATH = "/v1/chat/completions"
CHAT: dict[str, Any] = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
BODY_LIMIT = 1024 * 1024  # PROXY_MAX_BODY_BYTES of the test server (proxy/tests/live.py)
ORJSON_DEPTH_LIMIT = 1024  # orjson.loads refuses deeper documents
ORJSON_WRITE_DEPTH_LIMIT = 254  # orjson.dumps refuses deeper ones
# twisted (under daphne) reads a header line of at most 16 KiB and 16 KiB of headers in all.
TWISTED_HEADER_LIMIT = 16 * 1024


@dataclass(frozen=True)
class Answer:
    status: int
    headers: http.client.HTTPMessage
    raw: bytes

    def json(self) -> Any:
        return json.loads(self.raw)


def send(
    gateway: LiveGateway,
    method: str,
    path: str,
    body: bytes | Iterator[bytes] = b"",
    headers: dict[str, Any] | None = None,
) -> Answer:
    """One request on a fresh connection; an iterator body goes out chunked, without Content-Length."""
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=20)
    try:
        conn.request(method, path, body=body, headers=headers or {}, encode_chunked=not isinstance(body, bytes))
        response = conn.getresponse()
        return Answer(response.status, response.headers, response.read())
    finally:
        conn.close()


def json_headers(key: IssuedKey) -> dict[str, str]:
    return {"Content-Type": "application/json", **key.headers}


def post_chat(gateway: LiveGateway, key: IssuedKey, body: Any) -> Answer:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return send(gateway, "POST", CHAT_PATH, raw, json_headers(key))


def assert_refused(answer: Answer, status: int, code: str, param: str | None = None) -> None:
    """The refusal in OpenAI's envelope: exactly its four fields, a stable code."""
    assert (answer.status, answer.headers["Content-Type"]) == (status, "application/json"), answer.raw[:300]
    body = answer.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    assert (body["error"]["code"], body["error"]["param"]) == (code, param)


def assert_still_serving(gateway: LiveGateway, key: IssuedKey) -> None:
    answer = post_chat(gateway, key, CHAT)
    assert answer.status == 200, answer.raw[:300]
    assert answer.json()["choices"][0]["message"]["content"].startswith("w0 ")


def nested_lists(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def chat_with_nested_content(depth: int) -> bytes:
    """A chat body whose document is `depth` levels deep in all (object, list, message, then lists)."""
    return b'{"model":"gpt-test","messages":[{"role":"user","content":' + nested_lists(depth - 3) + b"}]}"


# --- the body is not a JSON object -------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
        b'{"model": "gpt-test", "messages": [{"role": "us',
        b"\xff\xfe\xfd",
        b"\x00\x00\x00\x00",
        json.dumps(CHAT).encode() + b"\x00",
    ],
    ids=["nan-literal", "truncated", "invalid-utf8-bytes", "nul-bytes", "nul-after-the-document"],
)
def test_a_body_that_is_not_json_is_refused_as_invalid_json(
    live_gateway: LiveGateway, key: IssuedKey, raw: bytes
) -> None:
    assert_refused(post_chat(live_gateway, key, raw), 400, "invalid_json")
    assert_still_serving(live_gateway, key)


@pytest.mark.parametrize("raw", [b'"text"', b"42", b"null", b"true"], ids=["string", "number", "null", "boolean"])
def test_json_that_is_not_an_object_is_refused(live_gateway: LiveGateway, key: IssuedKey, raw: bytes) -> None:
    assert_refused(post_chat(live_gateway, key, raw), 400, "invalid_request")
    assert_still_serving(live_gateway, key)


def test_json_nested_past_the_parsers_limit_is_refused_as_invalid_json(
    live_gateway: LiveGateway, key: IssuedKey
) -> None:
    assert_refused(post_chat(live_gateway, key, chat_with_nested_content(ORJSON_DEPTH_LIMIT + 1)), 400, "invalid_json")
    assert_still_serving(live_gateway, key)


def test_json_nested_as_deep_as_the_gateway_can_forward_goes_through(live_gateway: LiveGateway, key: IssuedKey) -> None:
    assert post_chat(live_gateway, key, chat_with_nested_content(ORJSON_WRITE_DEPTH_LIMIT)).status == 200


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        (CHAT_PATH, chat_with_nested_content(ORJSON_WRITE_DEPTH_LIMIT + 1)),
        ("/v1/embeddings", b'{"model": "gpt-test", "input": ' + nested_lists(300) + b"}"),
        ("/cache/chat/completions", chat_with_nested_content(300)),
    ],
    ids=["chat", "embeddings", "cache-route"],
)
def test_json_nested_deeper_than_the_gateway_can_forward_is_refused_as_invalid_json(
    live_gateway: LiveGateway, key: IssuedKey, path: str, raw: bytes
) -> None:
    assert_refused(send(live_gateway, "POST", path, raw, json_headers(key)), 400, "invalid_json")
    assert_still_serving(live_gateway, key)


# --- fields of the wrong type or value --------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model", ["gpt-test"]),
        ("model", None),
        ("model", True),
        ("model", {"name": "gpt-test"}),
        ("messages", {"role": "user", "content": "hi"}),
        ("messages", "hi"),
        ("messages", None),
        ("messages", 1),
        ("stream", 1),
        ("stream", "true"),
        ("stream", {}),
        ("max_tokens", -1),
        ("max_tokens", 0),
        ("max_tokens", 1.5),
        ("max_tokens", "10"),
        ("max_tokens", True),
        ("max_tokens", 2**64),
        ("max_completion_tokens", "10"),
    ],
    ids=lambda v: repr(v)[:20],
)
def test_a_field_of_the_wrong_type_or_value_is_refused_and_named(
    live_gateway: LiveGateway, key: IssuedKey, field: str, value: Any
) -> None:
    assert_refused(post_chat(live_gateway, key, {**CHAT, field: value}), 400, "invalid_request", param=field)
    assert_still_serving(live_gateway, key)


@pytest.mark.parametrize("value", ["3", 1.5, -1, 0, True], ids=repr)
def test_an_n_that_is_not_a_positive_integer_is_refused(live_gateway: LiveGateway, key: IssuedKey, value: Any) -> None:
    assert_refused(post_chat(live_gateway, key, {**CHAT, "n": value}), 400, "invalid_request", param="n")


@pytest.mark.parametrize("messages", [[1], ["hi"], [None], [[{"role": "user", "content": "hi"}]]], ids=repr)
def test_a_message_that_is_not_an_object_is_refused(
    live_gateway: LiveGateway, key: IssuedKey, messages: list[Any]
) -> None:
    assert_refused(post_chat(live_gateway, key, {**CHAT, "messages": messages}), 400, "invalid_request", "messages")


def test_sampling_parameters_of_the_wrong_type_and_nul_characters_reach_the_provider_untouched(
    live_gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream
) -> None:
    # The gateway forwards a body as sent; ranges differ by provider, so it
    # does not judge them. The provider's 400 would reach the client as is.
    marker = f"marker-{uuid.uuid4().hex}"
    body = {**CHAT, "messages": [{"role": "user", "content": marker + "\u0000"}], "temperature": "hot", "top_p": [1]}
    assert post_chat(live_gateway, key, body).status == 200
    [received] = [r for r in fake_upstream.requests if r.body.get("messages") == body["messages"]]
    assert (received.body["temperature"], received.body["top_p"]) == ("hot", [1])


def test_an_absurd_max_tokens_is_forwarded_when_no_limit_applies(
    live_gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream
) -> None:
    marker = f"marker-{uuid.uuid4().hex}"
    body = {**CHAT, "messages": [{"role": "user", "content": marker}], "max_tokens": 10**18, "n": 10**18}
    assert post_chat(live_gateway, key, body).status == 200  # the provider decides; the fake accepts
    [received] = [r for r in fake_upstream.requests if r.body.get("messages") == body["messages"]]
    assert (received.body["max_tokens"], received.body["n"]) == (10**18, 10**18)


def test_an_absurd_max_tokens_is_refused_by_a_budget_without_overflowing(
    live_gateway: LiveGateway, issue_key: Callable[..., IssuedKey], django_db_blocker: Any
) -> None:
    from accounts.models import ApiKey
    from billing.services import budget_set

    key = issue_key()
    with django_db_blocker.unblock():
        budget_set(limit_usd=Decimal("1"), period="day", api_key=ApiKey.objects.get(pk=key.key_id))
    # 18446744073709551615 is the largest integer orjson reads as one.
    for max_tokens in (10**18, 2**64 - 1):
        assert_refused(
            post_chat(live_gateway, key, {**CHAT, "max_tokens": max_tokens, "n": 10**18}), 429, "budget_exceeded"
        )
    assert_still_serving(live_gateway, key)


def test_an_absurd_max_tokens_is_refused_by_a_tokens_per_minute_limit(
    live_gateway: LiveGateway, issue_key: Callable[..., IssuedKey]
) -> None:
    key = issue_key(tpm_limit=100_000)
    answer = post_chat(live_gateway, key, {**CHAT, "max_tokens": 2**64 - 1})
    assert_refused(answer, 429, "rate_limited")
    assert answer.headers["x-ratelimit-remaining-tokens"] == "100000"  # a refused request counts nowhere
    assert_still_serving(live_gateway, key)


# --- /v1/embeddings -----------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"model": "gpt-test"},
        {"model": "gpt-test", "input": None},
        {"model": "gpt-test", "input": ""},
        {"model": "gpt-test", "input": []},
        {"model": "gpt-test", "input": 5},
        {"model": "gpt-test", "input": {"a": 1}},
    ],
    ids=["missing", "null", "empty-string", "empty-list", "number", "object"],
)
def test_embeddings_without_usable_input_are_refused_and_named(
    live_gateway: LiveGateway, key: IssuedKey, body: dict[str, Any]
) -> None:
    answer = send(live_gateway, "POST", "/v1/embeddings", json.dumps(body).encode(), json_headers(key))
    assert_refused(answer, 400, "invalid_request", param="input")
    assert_still_serving(live_gateway, key)


@pytest.mark.parametrize("items", [[None], [{"a": 1}], [1.5], ["a", 1]], ids=repr)
def test_embeddings_input_items_that_are_neither_strings_nor_tokens_are_refused(
    live_gateway: LiveGateway, key: IssuedKey, items: list[Any]
) -> None:
    body = json.dumps({"model": "gpt-test", "input": items}).encode()
    assert_refused(
        send(live_gateway, "POST", "/v1/embeddings", body, json_headers(key)), 400, "invalid_request", param="input"
    )


# --- size --------------------------------------------------------------------


def test_a_chunked_body_over_the_limit_is_refused_with_413_in_the_envelope(
    live_gateway: LiveGateway, key: IssuedKey
) -> None:
    # No Content-Length: the guard has to count the chunks as they come.
    chunk = b" " * (64 * 1024)
    body = iter([b'{"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]', *[chunk] * 17, b"}"])
    assert_refused(send(live_gateway, "POST", CHAT_PATH, body, json_headers(key)), 413, "request_too_large")
    assert_still_serving(live_gateway, key)


def test_a_huge_number_of_messages_over_the_limit_is_refused_with_413(
    live_gateway: LiveGateway, key: IssuedKey
) -> None:
    body = {**CHAT, "messages": [{"role": "user", "content": "x"}] * 40_000}
    assert len(json.dumps(body)) > BODY_LIMIT
    assert_refused(post_chat(live_gateway, key, body), 413, "request_too_large")
    assert_still_serving(live_gateway, key)


def test_a_huge_number_of_messages_under_the_limit_goes_through(live_gateway: LiveGateway, key: IssuedKey) -> None:
    body = {**CHAT, "messages": [{"role": "user", "content": "x"}] * 25_000}
    assert len(json.dumps(body)) < BODY_LIMIT
    assert post_chat(live_gateway, key, body).status == 200


# --- content type, query string, headers ---------------------------------------


@pytest.mark.parametrize(
    ("content_type", "raw"),
    [
        ("application/x-www-form-urlencoded", b"model=gpt-test&messages=hi"),
        (
            "multipart/form-data; boundary=xyz",
            b'--xyz\r\nContent-Disposition: form-data; name="model"\r\n\r\ngpt-test\r\n--xyz--\r\n',
        ),
        ("text/plain", b"model: gpt-test"),
    ],
    ids=["form", "multipart", "text"],
)
def test_a_body_in_another_format_is_refused_as_invalid_json(
    live_gateway: LiveGateway, key: IssuedKey, content_type: str, raw: bytes
) -> None:
    answer = send(live_gateway, "POST", CHAT_PATH, raw, {**key.headers, "Content-Type": content_type})
    assert_refused(answer, 400, "invalid_json")
    assert_still_serving(live_gateway, key)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_json_body_is_read_whatever_content_type_it_is_sent_with(
    live_gateway: LiveGateway, key: IssuedKey, content_type: str | None
) -> None:
    headers = {**key.headers, **({"Content-Type": content_type} if content_type else {})}
    assert send(live_gateway, "POST", CHAT_PATH, json.dumps(CHAT).encode(), headers).status == 200


def test_query_string_junk_on_a_chat_request_is_ignored(live_gateway: LiveGateway, key: IssuedKey) -> None:
    path = CHAT_PATH + "?stream=true&model=nope&%ff=%00&a[]=1&" + "x=y&" * 500
    answer = send(live_gateway, "POST", path, json.dumps(CHAT).encode(), json_headers(key))
    assert (answer.status, answer.headers["Content-Type"]) == (200, "application/json; charset=utf-8")


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("start=%ff%fe", "start"),
        ("start=%00", "start"),
        ("end=9999-12-31T23:00", "end"),
        ("group_by=%ff", "group_by"),
        ("start=2024-02-30", "start"),
        ("end=0001-01-01", "end"),
    ],
    ids=["invalid-utf8", "nul", "past-the-last-date", "group-by-junk", "no-such-day", "end-before-start"],
)
def test_usage_query_junk_is_refused_and_named(
    live_gateway: LiveGateway, key: IssuedKey, query: str, param: str
) -> None:
    assert_refused(send(live_gateway, "GET", "/v1/usage?" + query, headers=key.headers), 400, "invalid_request", param)
    assert_still_serving(live_gateway, key)


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer " + "a" * 15_000},
        {"x-api-key": "sk-gw-" + "a" * 15_000},
        {"Authorization": b"Bearer sk-gw-\xff\xfe"},
    ],
    ids=["long-bearer", "long-x-api-key", "bytes-that-are-not-utf8"],
)
def test_a_long_or_garbled_key_header_is_a_401(
    live_gateway: LiveGateway, key: IssuedKey, headers: dict[str, Any]
) -> None:
    answer = send(live_gateway, "POST", CHAT_PATH, json.dumps(CHAT).encode(), headers)
    assert_refused(answer, 401, "invalid_api_key")
    assert_still_serving(live_gateway, key)


def test_long_header_values_the_server_can_read_do_not_disturb_a_request(
    live_gateway: LiveGateway, key: IssuedKey
) -> None:
    headers = {**json_headers(key), "Cache-Control": "no-cache, " + "x" * 8_000, "User-Agent": "u" * 7_000}
    assert send(live_gateway, "POST", CHAT_PATH, json.dumps(CHAT).encode(), headers).status == 200


def test_a_header_over_the_servers_line_limit_closes_the_connection_and_nothing_else(
    live_gateway: LiveGateway, key: IssuedKey
) -> None:
    # twisted drops the connection before the gateway sees the request: no
    # answer, no envelope, but no 500 and no harm to the next request.
    headers = {**json_headers(key), "X-Junk": "x" * TWISTED_HEADER_LIMIT}
    with pytest.raises(http.client.RemoteDisconnected):
        send(live_gateway, "POST", CHAT_PATH, json.dumps(CHAT).encode(), headers)
    assert_still_serving(live_gateway, key)


# --- paths and methods ---------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/no/such/path"),
        ("GET", "/v1/%ff%fe"),
        ("GET", "/v1/chat/completions/extra"),
        ("POST", "/v1//chat/completions"),
    ],
    ids=["post", "invalid-utf8", "below-an-operation", "double-slash"],
)
def test_an_unknown_path_under_v1_is_a_404_in_the_envelope(
    live_gateway: LiveGateway, key: IssuedKey, method: str, path: str
) -> None:
    assert_refused(send(live_gateway, method, path, json.dumps(CHAT).encode(), json_headers(key)), 404, "not_found")
    assert_still_serving(live_gateway, key)


def test_an_unknown_path_under_v1_messages_is_a_404_in_the_anthropic_envelope(
    live_gateway: LiveGateway, key: IssuedKey
) -> None:
    answer = send(live_gateway, "POST", "/v1/messages/no/such/path", b"{}", json_headers(key))
    assert (answer.status, answer.headers["Content-Type"]) == (404, "application/json")
    body = answer.json()
    assert (set(body), body["type"], set(body["error"])) == ({"type", "error"}, "error", {"type", "message"})
    assert body["error"]["type"] == "not_found_error"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/v1/models", "GET"),
        ("POST", "/v1/models", "GET"),
        ("PUT", "/v1/embeddings", "POST"),
        ("GET", "/v1/cache/purge", "POST"),
        ("PATCH", "/v1/usage", "GET"),
        ("OPTIONS", CHAT_PATH, "POST"),
    ],
    ids=lambda v: str(v).strip("/").replace("/", "."),
)
def test_a_wrong_method_is_a_405_in_the_envelope_naming_the_right_one(
    live_gateway: LiveGateway, key: IssuedKey, method: str, path: str, allowed: str
) -> None:
    answer = send(live_gateway, method, path, b"", key.headers)
    assert_refused(answer, 405, "method_not_allowed")
    assert answer.headers["Allow"] == allowed
    assert_still_serving(live_gateway, key)
