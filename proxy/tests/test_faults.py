"""Faults of an upstream, end to end: the client gets a complete answer from
a healthy deployment, or a clear error in its API's format, within the
configured timeouts, and every attempt leaves its usage record.

A gateway of its own (short timeouts, fast backoff, a breaker that never
opens: its tests are in test_breaker_live) serves routes made for these
tests, each named after one fault of the fake upstream.
"""

import json
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from conftest import UPSTREAM_SECRET, IssuedKey, Ledger, unique_marker
from proxy.tests.fake_upstream import DEFAULT_WORDS, FakeUpstream, ReceivedRequest
from proxy.tests.live import LiveGateway, free_port

# The quick provider's timeouts (seconds); SLACK is what a loaded machine may add.
CONNECT_TIMEOUT, FIRST_BYTE_TIMEOUT, IDLE_TIMEOUT = 1.0, 1.0, 0.6
SLACK = 1.5
BACKOFF_MAX = 1.5
RESILIENCE_ENV = {
    # Longer than every timeout of the quick provider: a test that ends
    # after one of those proves the provider's own timeouts were applied.
    "PROXY_READ_TIMEOUT": "5",
    "PROXY_RETRY_ATTEMPTS": "3",
    "PROXY_RETRY_ON_STATUS": "429,500,502,503,504",
    "PROXY_RETRY_BACKOFF_BASE": "0.01",
    "PROXY_RETRY_BACKOFF_MAX": str(BACKOFF_MAX),
}
PREFIX = f"flt{uuid.uuid4().hex[:6]}"
QUICK, DEAD = f"{PREFIX}-quick", f"{PREFIX}-dead"  # provider names
ANSWER = " ".join(DEFAULT_WORDS)


@dataclass(frozen=True)
class Dep:
    """One deployment of a test route: an upstream model of the fake (its
    name picks the fault), the priority that orders the attempts, and the
    provider: QUICK (the fake, short timeouts) or DEAD (nothing listens)."""

    upstream_model: str
    priority: int = 0
    provider: str = QUICK


def route(name: str) -> str:
    return f"{PREFIX}-{name}"


def routes_create(
    blocker: Any, fake: FakeUpstream, routes: dict[str, Iterable[Dep]], fallbacks: dict[str, list[str]] | None = None
) -> None:
    """Providers QUICK and DEAD and these routes (committed: the gateway
    under daphne reads them; saving them bumps the config version)."""
    from proxy.services import provider_upsert, route_upsert

    timeouts = {
        "connect_timeout": CONNECT_TIMEOUT,
        "first_byte_timeout": FIRST_BYTE_TIMEOUT,
        "idle_timeout": IDLE_TIMEOUT,
    }
    with blocker.unblock():
        quick, _ = provider_upsert(
            name=QUICK, kind="openai", base_url=fake.url, api_key=UPSTREAM_SECRET, timeouts=timeouts
        )
        dead, _ = provider_upsert(
            name=DEAD,
            kind="openai",
            base_url=f"http://127.0.0.1:{free_port()}/v1",
            api_key=UPSTREAM_SECRET,
            timeouts=timeouts,
        )
        providers = {QUICK: quick, DEAD: dead}
        for name, deps in routes.items():
            for dep in deps:
                route_upsert(
                    model=route(name),
                    provider=providers[dep.provider],
                    upstream_model=dep.upstream_model,
                    priority=dep.priority,
                    fallbacks=[route(f) for f in (fallbacks or {}).get(name, [])],
                )


ROUTES = {
    "split": [Dep("fake-error-503"), Dep("gpt-up")],
    "retry-after-fits": [Dep("fake-flaky-429-1-after-1", 0), Dep("gpt-up", 1)],
    "retry-after-too-long": [Dep("fake-error-429", 0), Dep("gpt-up", 1)],  # Retry-After: 7
    "chain-a": [Dep("fake-error-503")],
    "chain-b": [Dep("fallback-b")],
    "all-fail": [
        Dep("fake-error-500", 0),
        Dep("fake-error-502", 1),
        Dep("fake-error-503", 2),
        Dep("fake-error-504", 3),
    ],
    "refused": [Dep("gpt-up", 0, DEAD), Dep("gpt-up", 1)],
    "slow-headers": [Dep("fake-slowheaders-4", 0), Dep("gpt-up", 1)],
    "hang": [Dep("fake-hang")],
    "drop": [Dep("fake-drop-4", 0), Dep("gpt-up", 1)],
    "malformed": [Dep("fake-malformed")],
    "trickle": [Dep("fake-trickle-0.13")],  # 23 events: about 3 s in all
    "silent": [Dep("fake-silent-4", 0), Dep("gpt-up", 1)],
}


@pytest.fixture(scope="module")
def gateway(gateway_config: None, django_db_blocker: Any, fake_upstream: FakeUpstream) -> Iterator[LiveGateway]:
    routes_create(django_db_blocker, fake_upstream, ROUTES, fallbacks={"chain-a": ["chain-b"]})
    # The breaker is not under test here: failures must not take deployments out.
    live = LiveGateway(env={**RESILIENCE_ENV, "PROXY_BREAKER_FAILURES": "1000"}).start()
    yield live
    live.terminate()


# --- calling the gateway -----------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    status: int
    headers: httpx.Headers
    json: Any  # the body of an answer that is not a stream
    events: list[Any]  # a stream's `data:` payloads in order, JSON-decoded where they are JSON
    elapsed: float  # seconds from sending to the end of the body

    @property
    def request_id(self) -> str:
        return self.headers["x-request-id"]

    @property
    def deployment(self) -> str | None:
        return self.headers.get("x-gateway-deployment")

    @property
    def attempts(self) -> str | None:
        return self.headers.get("x-gateway-attempts")


def sse_data(raw: str) -> list[Any]:
    payloads: list[Any] = []
    for event in raw.replace("\r\n", "\n").split("\n\n"):
        lines = [line[5:].lstrip(" ") for line in event.split("\n") if line.startswith("data:")]
        if not lines:
            continue
        data = "\n".join(lines)
        try:
            payloads.append(json.loads(data))
        except ValueError:
            payloads.append(data)
    return payloads


def send(gateway: LiveGateway, path: str, body: dict[str, Any], headers: dict[str, str]) -> Answer:
    started = time.monotonic()
    with httpx.stream("POST", gateway.url + path, json=body, headers=headers, timeout=20) as response:
        raw = response.read().decode("utf-8", "replace")
    elapsed = time.monotonic() - started
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        return Answer(response.status_code, response.headers, None, sse_data(raw), elapsed)
    try:
        parsed: Any = json.loads(raw)
    except ValueError:
        parsed = raw
    return Answer(response.status_code, response.headers, parsed, [], elapsed)


def chat(gateway: LiveGateway, key: IssuedKey, model: str, marker: str, *, stream: bool = False) -> Answer:
    body = {"model": model, "messages": [{"role": "user", "content": marker}], "stream": stream}
    return send(gateway, "/v1/chat/completions", body, key.headers)


def messages(gateway: LiveGateway, key: IssuedKey, model: str, marker: str) -> Answer:
    body = {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": marker}]}
    return send(gateway, "/v1/messages", body, {"x-api-key": key.plaintext, "anthropic-version": "2023-06-01"})


def seen_upstream(fake: FakeUpstream, marker: str, upstream_model: str | None = None) -> list[ReceivedRequest]:
    return [
        r
        for r in list(fake.requests)
        if marker in str(r.body.get("messages")) and (upstream_model is None or r.body.get("model") == upstream_model)
    ]


def attempts_recorded(records: list[Any]) -> list[tuple[str, int, str, str, str]]:
    """(request_id, status, error_code, provider, upstream_model) of each record, sorted."""
    return sorted((r.request_id, r.status_code, r.error_code, r.provider, r.upstream_model) for r in records)


def assert_openai_error(answer: Answer, status: int, code: str, type_: str) -> None:
    assert answer.status == status, answer
    assert set(answer.json) == {"error"} and set(answer.json["error"]) == {"message", "type", "param", "code"}
    assert (answer.json["error"]["code"], answer.json["error"]["type"]) == (code, type_)
    assert answer.json["error"]["message"]


def assert_stream_error_event(event: Any, code: str) -> None:
    assert isinstance(event, dict) and set(event) == {"error"}, event
    assert event["error"]["code"] == code and event["error"]["type"] == "api_error"
    assert event["error"]["message"]


# --- failing before the first byte: another deployment answers ----------------------
def test_a_route_with_a_failing_and_a_healthy_deployment_always_answers_from_the_healthy_one(
    gateway: LiveGateway, key: IssuedKey, ledger: Ledger
) -> None:
    answers = [chat(gateway, key, route("split"), unique_marker()) for _ in range(8)]
    expected = []
    for answer in answers:
        assert answer.status == 200
        assert answer.json["choices"][0]["message"]["content"] == ANSWER
        assert (answer.deployment, answer.attempts in ("1", "2")) == (f"{QUICK}/gpt-up", True)
        expected.append((answer.request_id, 200, "", QUICK, "gpt-up"))
        if answer.attempts == "2":
            expected.append((f"{answer.request_id}~1", 503, "fake_503", QUICK, "fake-error-503"))
    assert attempts_recorded(ledger.wait(key.key_id, len(expected))) == sorted(expected)


def test_a_429_whose_retry_after_fits_the_backoff_is_waited_out_then_another_deployment_answers(
    gateway: LiveGateway, key: IssuedKey, ledger: Ledger, fake_upstream: FakeUpstream
) -> None:
    marker = unique_marker()
    answer = chat(gateway, key, route("retry-after-fits"), marker)
    assert (answer.status, answer.deployment, answer.attempts) == (200, f"{QUICK}/gpt-up", "2")
    assert 1.0 <= answer.elapsed < 1.0 + SLACK  # the fake asked for Retry-After: 1
    assert len(seen_upstream(fake_upstream, marker, "fake-flaky-429-1-after-1")) == 1
    assert attempts_recorded(ledger.wait(key.key_id, 2)) == [
        (answer.request_id, 200, "", QUICK, "gpt-up"),
        (f"{answer.request_id}~1", 429, "fake_429", QUICK, "fake-flaky-429-1-after-1"),
    ]


def test_a_429_asking_for_longer_than_the_backoff_maximum_moves_on_at_once(
    gateway: LiveGateway, key: IssuedKey, ledger: Ledger
) -> None:
    answer = chat(gateway, key, route("retry-after-too-long"), unique_marker())
    assert (answer.status, answer.deployment, answer.attempts) == (200, f"{QUICK}/gpt-up", "2")
    assert answer.elapsed < BACKOFF_MAX  # not the 7 s asked, nor the backoff's maximum
    assert attempts_recorded(ledger.wait(key.key_id, 2)) == [
        (answer.request_id, 200, "", QUICK, "gpt-up"),
        (f"{answer.request_id}~1", 429, "fake_429", QUICK, "fake-error-429"),
    ]


def test_a_route_whose_only_deployment_fails_falls_back_to_the_next_route(
    gateway: LiveGateway, key: IssuedKey, ledger: Ledger
) -> None:
    answer = chat(gateway, key, route("chain-a"), unique_marker())
    assert answer.status == 200
    assert answer.json["choices"][0]["message"]["content"] == ANSWER
    assert (answer.deployment, answer.attempts) == (f"{QUICK}/fallback-b", "2")
    assert attempts_recorded(ledger.wait(key.key_id, 2)) == [
        (answer.request_id, 200, "", QUICK, "fallback-b"),
        (f"{answer.request_id}~1", 503, "fake_503", QUICK, "fake-error-503"),
    ]


def test_a_deployment_that_refuses_connections_is_skipped_for_the_next(
    gateway: LiveGateway, key: IssuedKey, ledger: Ledger
) -> None:
    answer = chat(gateway, key, route("refused"), unique_marker())
    assert (answer.status, answer.deployment, answer.attempts) == (200, f"{QUICK}/gpt-up", "2")
    assert answer.elapsed < CONNECT_TIMEOUT + SLACK
    assert attempts_recorded(ledger.wait(key.key_id, 2)) == [
        (answer.request_id, 200, "", QUICK, "gpt-up"),
        (f"{answer.request_id}~1", 502, "upstream_unreachable", DEAD, "gpt-up"),
    ]


def test_headers_that_do_not_come_within_the_first_byte_timeout_move_on_to_the_next_deployment(
    gateway: LiveGateway, key: IssuedKey, ledger: Ledger
) -> None:
    answer = chat(gateway, key, route("slow-headers"), unique_marker(), stream=True)
    assert (answer.status, answer.deployment, answer.attempts) == (200, f"{QUICK}/gpt-up", "2")
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in answer.events[:-1]) == ANSWER
    assert answer.events[-1] == "[DONE]"
    assert FIRST_BYTE_TIMEOUT <= answer.elapsed < FIRST_BYTE_TIMEOUT + SLACK
    assert attempts_recorded(ledger.wait(key.key_id, 2)) == [
        (answer.request_id, 200, "", QUICK, "gpt-up"),
        (f"{answer.request_id}~1", 504, "upstream_timeout", QUICK, "fake-slowheaders-4"),
    ]


def test_an_upstream_that_never_sends_headers_is_a_504_upstream_timeout_within_the_first_byte_timeout(
    gateway: LiveGateway, key: IssuedKey, ledger: Ledger
) -> None:
    answer = chat(gateway, key, route("hang"), unique_marker())
    assert_openai_error(answer, 504, "upstream_timeout", "api_error")
    assert FIRST_BYTE_TIMEOUT <= answer.elapsed < FIRST_BYTE_TIMEOUT + SLACK
    assert answer.attempts == "1"
    assert attempts_recorded(ledger.wait(key.key_id, 1)) == [
        (answer.request_id, 504, "upstream_timeout", QUICK, "fake-hang")
    ]


# --- every attempt fails: the last error, in the client's format ------------------
def test_when_every_attempt_fails_the_chat_client_gets_the_last_error_and_each_attempt_is_recorded(
    gateway: LiveGateway, key: IssuedKey, ledger: Ledger, fake_upstream: FakeUpstream
) -> None:
    marker = unique_marker()
    answer = chat(gateway, key, route("all-fail"), marker)
    assert_openai_error(answer, 503, "fake_503", "overloaded_error")
    assert UPSTREAM_SECRET not in answer.json["error"]["message"]
    assert answer.attempts == "3"  # which deployment failed last is in the ledger, not promised in a header
    assert seen_upstream(fake_upstream, marker, "fake-error-504") == []  # PROXY_RETRY_ATTEMPTS=3
    assert attempts_recorded(ledger.wait(key.key_id, 3)) == [
        (answer.request_id, 503, "fake_503", QUICK, "fake-error-503"),
        (f"{answer.request_id}~1", 500, "fake_500", QUICK, "fake-error-500"),
        (f"{answer.request_id}~2", 502, "fake_502", QUICK, "fake-error-502"),
    ]


def test_when_every_attempt_fails_the_messages_client_gets_the_last_error_in_anthropics_envelope(
    gateway: LiveGateway, key: IssuedKey, ledger: Ledger
) -> None:
    answer = messages(gateway, key, route("all-fail"), unique_marker())
    assert answer.status == 503
    assert set(answer.json) == {"type", "error"} and answer.json["type"] == "error"
    assert answer.json["error"]["type"] == "overloaded_error"
    assert "fake failure 503" in answer.json["error"]["message"]
    assert answer.attempts == "3"  # which deployment failed last is in the ledger, not promised in a header
    records = ledger.wait(key.key_id, 3)
    assert [(r.request_id, r.status_code) for r in sorted(records, key=lambda r: r.request_id)] == [
        (answer.request_id, 503),
        (f"{answer.request_id}~1", 500),
        (f"{answer.request_id}~2", 502),
    ]


# --- failing after the first byte: never a retry -------------------------------------
def test_a_stream_cut_off_mid_way_ends_with_an_error_event_is_not_retried_and_records_what_was_seen(
    gateway: LiveGateway, key: IssuedKey, ledger: Ledger, fake_upstream: FakeUpstream
) -> None:
    from gateway.kernel.context import estimate_tokens
    from proxy.dialects import Dialect
    from proxy.usage import estimate_prompt_tokens

    marker = unique_marker()
    answer = chat(gateway, key, route("drop"), marker, stream=True)
    assert (answer.status, answer.deployment, answer.attempts) == (200, f"{QUICK}/fake-drop-4", "1")
    # The fake's first 4 events (the role, then "w0", " w1", " w2"), then the gateway's error.
    assert [e["choices"][0]["delta"] for e in answer.events[:4]] == [
        {"role": "assistant", "content": ""},
        {"content": "w0"},
        {"content": " w1"},
        {"content": " w2"},
    ]
    assert len(answer.events) == 5
    assert_stream_error_event(answer.events[4], "upstream_stream_interrupted")
    assert len(seen_upstream(fake_upstream, marker)) == 1
    [record] = ledger.wait(key.key_id, 1)
    assert attempts_recorded([record]) == [
        (answer.request_id, 200, "upstream_stream_interrupted", QUICK, "fake-drop-4")
    ]
    assert (record.stream, record.usage_estimated) == (True, True)
    assert record.output_tokens == estimate_tokens(len("w0 w1 w2"))
    assert record.input_tokens == estimate_prompt_tokens(
        Dialect.CHAT, {"messages": [{"role": "user", "content": marker}]}
    )


def test_a_malformed_stream_is_a_clear_error_never_a_500_and_is_recorded(
    gateway: LiveGateway, key: IssuedKey, ledger: Ledger
) -> None:
    answer = chat(gateway, key, route("malformed"), unique_marker(), stream=True)
    # Found out once relaying (the headers said 200): the garbage passes as
    # the upstream sent it, and the stream ends with the error event.
    assert answer.status == 200
    last = answer.events[-1] if answer.events else None
    assert isinstance(last, dict) and "error" in last, f"the stream does not end with an error: {answer.events}"
    code = last["error"]["code"]
    assert code == "upstream_stream_incomplete"
    assert_stream_error_event(last, code)
    [record] = ledger.wait(key.key_id, 1)
    assert (record.request_id, record.error_code, record.upstream_model) == (answer.request_id, code, "fake-malformed")


def test_a_stream_that_keeps_moving_has_no_total_limit(gateway: LiveGateway, key: IssuedKey, ledger: Ledger) -> None:
    answer = chat(gateway, key, route("trickle"), unique_marker(), stream=True)
    assert answer.status == 200
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in answer.events[:-1]) == ANSWER
    assert answer.events[-1] == "[DONE]"
    # Longer than every timeout of its provider, each gap well within the idle one.
    assert answer.elapsed > FIRST_BYTE_TIMEOUT + CONNECT_TIMEOUT + IDLE_TIMEOUT
    [record] = ledger.wait(key.key_id, 1)
    assert attempts_recorded([record]) == [(answer.request_id, 200, "", QUICK, "fake-trickle-0.13")]
    assert (record.output_tokens, record.usage_estimated) == (len(DEFAULT_WORDS), False)


def test_a_stream_that_goes_silent_ends_with_an_error_event_within_the_idle_timeout(
    gateway: LiveGateway, key: IssuedKey, ledger: Ledger, fake_upstream: FakeUpstream
) -> None:
    marker = unique_marker()
    answer = chat(gateway, key, route("silent"), marker, stream=True)
    assert (answer.status, answer.deployment, answer.attempts) == (200, f"{QUICK}/fake-silent-4", "1")
    assert answer.events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert len(answer.events) == 2
    assert_stream_error_event(answer.events[1], "upstream_stream_interrupted")
    assert IDLE_TIMEOUT <= answer.elapsed < IDLE_TIMEOUT + SLACK
    assert len(seen_upstream(fake_upstream, marker)) == 1  # the healthy deployment was never asked
    assert attempts_recorded(ledger.wait(key.key_id, 1)) == [
        (answer.request_id, 200, "upstream_stream_interrupted", QUICK, "fake-silent-4")
    ]
