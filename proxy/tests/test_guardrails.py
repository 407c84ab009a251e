"""Guardrails on the request path: what the provider received, what the client got, the usage row.

The gateway runs in this process through its ASGI application; guardrails,
tenants and keys are committed through the blocker, and a request after a
configuration change may read the catalog once (the first test shows that
a warm request with guardrails makes no query at all).
"""

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from billing.meter import meter
from conftest import IssuedKey
from gateway import lifecycle
from gateway.metrics import REGISTRY
from proxy.tests.asgi import AsgiResponse, asgi_call
from proxy.tests.fake_upstream import FakeUpstream
from proxy.upstream import upstream_sessions_close

AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
ANTHROPIC_KEY = "sk-ant-api03-" + "Q" * 93 + "AA"
EMAIL = "alice.smith@example.com"
ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01"}
Spec = tuple[str, str, str] | tuple[str, str, str, str]  # kind, action, stage[, pattern]


@pytest.fixture(scope="session")
def echo_routes(gateway_config: None, django_db_blocker: Any) -> None:
    """claude-echo: the fake Anthropic upstream answering with the prompt (fake_upstream's `fake-echo`)."""
    from proxy.models import Provider
    from proxy.services import route_upsert

    with django_db_blocker.unblock():
        route_upsert(
            model="claude-echo", provider=Provider.objects.get(name="fake-anthropic"), upstream_model="claude-fake-echo"
        )


@pytest.fixture
async def app(echo_routes: None, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    from gateway.asgi import application

    monkeypatch.setattr(lifecycle, "GATEWAY_BACKGROUND", False)  # no writer, no poller: events stay in the meter
    meter.take(meter.pending)
    yield application
    meter.take(meter.pending)
    await upstream_sessions_close()  # this test's loop ends with the test


@pytest.fixture
def guarded(django_db_blocker: Any) -> Callable[..., Any]:
    """`await guarded(spec, ..., on="tenant"|"key")`: a fresh tenant and key, the guardrails attached."""

    def make(*specs: Spec, on: str = "tenant", **key_options: Any) -> IssuedKey:
        from accounts.services import api_key_issue, tenant_create
        from proxy.guardrails.services import guardrail_upsert, guardrails_attach

        with django_db_blocker.unblock():
            try:
                tenant = tenant_create(slug=f"t-{uuid.uuid4().hex[:12]}")
                plaintext, api_key = api_key_issue(tenant=tenant, name="test", **key_options)
                rails = [
                    guardrail_upsert(
                        name=f"g-{uuid.uuid4().hex[:10]}",
                        kind=s[0],
                        action=s[1],
                        stage=s[2],
                        pattern=s[3] if len(s) > 3 else "",
                    )[0]
                    for s in specs
                ]
                guardrails_attach(rails, **({"tenant": tenant} if on == "tenant" else {"api_key": api_key}))
                return IssuedKey(plaintext=plaintext, key_id=api_key.pk, tenant_id=tenant.pk)
            finally:
                connection.close()

    return sync_to_async(make)


@pytest.fixture
def attach(django_db_blocker: Any) -> Callable[..., Any]:
    """`await attach(key, spec, on="tenant"|"key")`: one more guardrail for a key's tenant, or the key."""

    def make(key: IssuedKey, spec: Spec, on: str = "tenant") -> None:
        from accounts.models import ApiKey, Tenant
        from proxy.guardrails.services import guardrail_upsert

        with django_db_blocker.unblock():
            try:
                rail, _, _ = guardrail_upsert(
                    name=f"a-{uuid.uuid4().hex[:10]}", kind=spec[0], action=spec[1], stage=spec[2]
                )
                owner = Tenant.objects.get(pk=key.tenant_id) if on == "tenant" else ApiKey.objects.get(pk=key.key_id)
                owner.guardrails.add(rail)  # the many-to-many signal reloads the catalog
            finally:
                connection.close()

    return sync_to_async(make)


@pytest.fixture
def another_key(django_db_blocker: Any) -> Callable[..., Any]:
    """`await another_key(key)`: a second key of the same tenant."""

    def make(key: IssuedKey, **options: Any) -> IssuedKey:
        from accounts.models import Tenant
        from accounts.services import api_key_issue

        with django_db_blocker.unblock():
            try:
                plaintext, api_key = api_key_issue(tenant=Tenant.objects.get(pk=key.tenant_id), name="other", **options)
                return IssuedKey(plaintext=plaintext, key_id=api_key.pk, tenant_id=key.tenant_id)
            finally:
                connection.close()

    return sync_to_async(make)


@pytest.fixture
def post(app: Any, django_db_blocker: Any) -> Callable[..., Any]:
    async def send(key: IssuedKey, path: str, body: dict[str, Any], *, warm: bool = False) -> AsgiResponse:
        headers = {**key.headers, **(ANTHROPIC_HEADERS if path.startswith("/v1/messages") else {})}
        if warm:  # the database stays blocked: any query fails the request
            return await asgi_call(app, "POST", path, headers=headers, body=orjson.dumps(body))
        with django_db_blocker.unblock():
            return await asgi_call(app, "POST", path, headers=headers, body=orjson.dumps(body))

    return send


def received(fake: FakeUpstream, marker: str) -> list[dict[str, Any]]:
    """The bodies the fake provider received that carry `marker`."""
    return [r.body for r in fake.requests if marker in orjson.dumps(r.body).decode()]


def verdicts(kind: str, action: str, stage: str) -> float:
    return (
        REGISTRY.get_sample_value("gateway_guardrail_verdicts_total", {"kind": kind, "action": action, "stage": stage})
        or 0.0
    )


@pytest.fixture
def usage_rows(django_db_blocker: Any) -> Callable[..., Any]:
    """`await usage_rows(key)`: the meter's events stored by the ledger, and the key's rows."""

    def store(key: IssuedKey) -> list[Any]:
        from billing.models import UsageRecord
        from billing.spool import usage_events_store

        with django_db_blocker.unblock():
            try:
                usage_events_store(meter.take(meter.pending))
                return list(UsageRecord.objects.filter(api_key_id=key.key_id).order_by("id"))
            finally:
                connection.close()

    return sync_to_async(store)


def chat(text: str, *, model: str = "gpt-test", stream: bool = False) -> dict[str, Any]:
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": text}]}


def message(text: str, *, model: str = "claude-test", stream: bool = False) -> dict[str, Any]:
    return {"model": model, "max_tokens": 50, "stream": stream, "messages": [{"role": "user", "content": text}]}


# --- input ---------------------------------------------------------------------------


async def test_a_blocked_prompt_never_reaches_the_provider_and_leaves_no_usage_record(
    guarded: Any, post: Any, fake_upstream: FakeUpstream, usage_rows: Any
) -> None:
    key = await guarded(("secrets", "block", "input"))
    marker = uuid.uuid4().hex
    before = verdicts("secrets", "block", "input")

    response = await post(key, "/v1/chat/completions", chat(f"{marker} deploy with {AWS_KEY}"))

    assert response.status == 400
    error = orjson.loads(response.body)["error"]
    assert (error["code"], error["type"]) == ("guardrail_blocked", "invalid_request_error")
    assert AWS_KEY not in response.body.decode() and "secrets" in error["message"]
    assert received(fake_upstream, marker) == []
    assert await usage_rows(key) == []  # it never reached an upstream
    assert verdicts("secrets", "block", "input") == before + 1


async def test_a_block_is_answered_in_the_envelope_of_the_api_called(guarded: Any, post: Any) -> None:
    key = await guarded(("secrets", "block", "input"))
    anthropic = await post(key, "/v1/messages", message(f"use {ANTHROPIC_KEY}"))
    assert anthropic.status == 400
    body = orjson.loads(anthropic.body)
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "guardrail" in body["error"]["message"] and ANTHROPIC_KEY not in anthropic.body.decode()
    ollama = await post(key, "/api/chat", {"model": "gpt-test", "messages": [{"role": "user", "content": AWS_KEY}]})
    assert (ollama.status, orjson.loads(ollama.body)["code"]) == (400, "guardrail_blocked")


async def test_a_warm_request_with_guardrails_makes_no_database_query(guarded: Any, post: Any) -> None:
    key = await guarded(("pii", "redact", "input"), ("secrets", "block", "input"), ("pii", "redact", "output"))
    assert (await post(key, "/v1/chat/completions", chat("warm up"))).status == 200
    redacted = await post(key, "/v1/chat/completions", chat(f"mail {EMAIL}"), warm=True)
    blocked = await post(key, "/v1/chat/completions", chat(AWS_KEY), warm=True)
    assert (redacted.status, blocked.status) == (200, 400)


@pytest.mark.parametrize(
    ("path", "body", "where"),
    [
        (
            "/v1/chat/completions",
            {
                "model": "gpt-test",
                "messages": [
                    {"role": "system", "content": "S {text}"},
                    {"role": "user", "content": [{"type": "text", "text": "U {text}"}]},
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"to": "{text}"}'}}
                        ],
                    },
                    {"role": "tool", "tool_call_id": "c", "content": "T {text}"},
                ],
            },
            4,
        ),
        (
            "/v1/messages",
            {
                "model": "claude-test",
                "max_tokens": 20,
                "system": [{"type": "text", "text": "S {text}"}],
                "messages": [
                    {"role": "user", "content": "U {text}"},
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {"to": "{text}"}}],
                    },
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "R {text}"}]},
                ],
            },
            4,
        ),
        (
            "/v1/responses",
            {
                "model": "gpt-test",
                "instructions": "I {text}",
                "input": [{"role": "user", "content": [{"type": "input_text", "text": "U {text}"}]}],
            },
            2,
        ),
        ("/v1/embeddings", {"model": "gpt-test", "input": ["A {text}", "B {text}"]}, 2),
        ("/v1/completions", {"model": "gpt-test", "prompt": "P {text}"}, 1),
        ("/api/chat", {"model": "gpt-test", "stream": False, "messages": [{"role": "user", "content": "U {text}"}]}, 1),
        ("/api/generate", {"model": "gpt-test", "stream": False, "system": "S {text}", "prompt": "P {text}"}, 2),
    ],
    ids=["chat", "messages", "responses", "embeddings", "completions", "ollama-chat", "ollama-generate"],
)
async def test_every_text_the_client_sends_is_redacted_before_it_is_forwarded(
    guarded: Any, post: Any, fake_upstream: FakeUpstream, path: str, body: dict[str, Any], where: int
) -> None:
    key = await guarded(("pii", "redact", "input"))
    marker = uuid.uuid4().hex
    sent = orjson.loads(orjson.dumps(body).replace(b"{text}", f"{marker} {EMAIL}".encode()))

    response = await post(key, path, sent)

    assert response.status == 200, response.body
    [upstream] = received(fake_upstream, marker)
    forwarded = orjson.dumps(upstream).decode()
    assert EMAIL not in forwarded
    assert forwarded.count(f"{marker} [REDACTED:EMAIL]") == where


async def test_a_redacted_request_is_recorded_with_its_verdicts_never_the_matched_text(
    guarded: Any, post: Any, usage_rows: Any
) -> None:
    key = await guarded(("pii", "redact", "input"), ("secrets", "flag", "input"))
    response = await post(key, "/v1/chat/completions", chat(f"{EMAIL}, bob@example.org and {AWS_KEY}"))
    assert response.status == 200
    [row] = await usage_rows(key)
    assert row.guardrails == "pii:redact:2,secrets:flag:1"


async def test_a_flagged_prompt_is_forwarded_as_it_is_and_only_recorded(
    guarded: Any, post: Any, fake_upstream: FakeUpstream, usage_rows: Any
) -> None:
    key = await guarded(("secrets", "flag", "input"))
    marker = uuid.uuid4().hex
    before = verdicts("secrets", "flag", "input")
    response = await post(key, "/v1/chat/completions", chat(f"{marker} {AWS_KEY}"))
    assert response.status == 200
    [upstream] = received(fake_upstream, marker)
    assert upstream["messages"][0]["content"] == f"{marker} {AWS_KEY}"
    [row] = await usage_rows(key)
    assert row.guardrails == "secrets:flag:1" and AWS_KEY not in row.guardrails
    assert verdicts("secrets", "flag", "input") == before + 1


async def test_tenant_as_guardrail_does_not_apply_to_tenant_b(guarded: Any, post: Any, issue_key: Any) -> None:
    tenant_a = await guarded(("secrets", "block", "input"))
    tenant_b = await sync_to_async(lambda: _closing(issue_key))()
    assert (await post(tenant_a, "/v1/chat/completions", chat(AWS_KEY))).status == 400
    assert (await post(tenant_b, "/v1/chat/completions", chat(AWS_KEY))).status == 200


def _closing(issue_key: Any) -> IssuedKey:
    try:
        return issue_key()
    finally:
        connection.close()


async def test_a_keys_guardrail_applies_to_that_key_only(guarded: Any, another_key: Any, post: Any) -> None:
    guarded_key = await guarded(("regex", "block", "input", r"PROJECT-[A-Z]{4}"), on="key")
    sibling = await another_key(guarded_key)
    assert (await post(guarded_key, "/v1/chat/completions", chat("about PROJECT-ZEUS"))).status == 400
    assert (await post(sibling, "/v1/chat/completions", chat("about PROJECT-ZEUS"))).status == 200


async def test_a_guardrail_attached_later_applies_to_the_next_request(guarded: Any, attach: Any, post: Any) -> None:
    key = await guarded()
    assert (await post(key, "/v1/chat/completions", chat(AWS_KEY))).status == 200
    await attach(key, ("secrets", "block", "input"))
    assert (await post(key, "/v1/chat/completions", chat(AWS_KEY))).status == 400


async def test_a_block_tells_the_guardrail_blocked_webhook_without_the_matched_text(
    guarded: Any, post: Any, django_db_blocker: Any
) -> None:
    from billing.webhooks import emits_settled

    key = await guarded(("secrets", "block", "input"))

    def hook() -> None:
        from accounts.models import Tenant
        from billing.webhooks import webhook_set

        with django_db_blocker.unblock():
            try:
                webhook_set(
                    url="http://127.0.0.1:9/hook",
                    events=["guardrail.blocked"],
                    secret="s3cret",
                    tenant=Tenant.objects.get(pk=key.tenant_id),
                )
            finally:
                connection.close()

    def deliveries() -> list[Any]:
        from billing.models import WebhookDelivery

        with django_db_blocker.unblock():
            try:
                assert emits_settled()
                return list(WebhookDelivery.objects.filter(tenant_id=key.tenant_id))
            finally:
                connection.close()

    await sync_to_async(hook)()
    with django_db_blocker.unblock():  # the webhook thread writes the outbox meanwhile
        assert (await post(key, "/v1/chat/completions", chat(f"key {AWS_KEY}"))).status == 400
        assert (await post(key, "/v1/chat/completions", chat(f"again {AWS_KEY}"))).status == 400
        [delivery] = await sync_to_async(deliveries)()  # once per guardrail, key and hour: no storm
    assert delivery.event == "guardrail.blocked"
    assert delivery.payload["key_id"] == key.key_id and delivery.payload["stage"] == "input"
    assert delivery.payload["kind"] == "secrets" and AWS_KEY not in orjson.dumps(delivery.payload).decode()


# --- output --------------------------------------------------------------------------


async def test_a_json_answer_is_redacted_and_the_provider_still_got_the_prompt(
    guarded: Any, post: Any, fake_upstream: FakeUpstream, usage_rows: Any
) -> None:
    key = await guarded(("pii", "redact", "output"))
    marker = uuid.uuid4().hex
    response = await post(key, "/v1/chat/completions", chat(f"{marker} write to {EMAIL}", model="fake/fake-echo"))
    assert response.status == 200
    answer = orjson.loads(response.body)["choices"][0]["message"]["content"]
    assert answer == f"{marker} write to [REDACTED:EMAIL]"
    assert received(fake_upstream, marker)[0]["messages"][0]["content"].endswith(EMAIL)
    [row] = await usage_rows(key)
    assert row.guardrails == "pii:redact:1" and row.status_code == 200


async def test_an_anthropic_json_answer_is_redacted(guarded: Any, post: Any) -> None:
    key = await guarded(("secrets", "redact", "output"))
    response = await post(key, "/v1/messages", message(f"your key: {ANTHROPIC_KEY}", model="claude-echo"))
    assert orjson.loads(response.body)["content"][0]["text"] == "your key: [REDACTED:ANTHROPIC_KEY]"


def openai_text(body: bytes) -> tuple[str, list[str]]:
    deltas = []
    for line in body.split(b"\n"):
        if line.startswith(b"data: {"):
            for choice in orjson.loads(line[6:]).get("choices", []):
                deltas.append(choice.get("delta", {}).get("content") or "")
    return "".join(deltas), [d for d in deltas if d]


def anthropic_text(body: bytes) -> tuple[str, list[str]]:
    deltas = []
    for line in body.split(b"\n"):
        if line.startswith(b"data: {"):
            event = orjson.loads(line[6:])
            if event.get("type") == "content_block_delta" and event["delta"].get("type") == "text_delta":
                deltas.append(event["delta"]["text"])
    return "".join(deltas), [d for d in deltas if d]


SPLIT_TEXTS = {
    "email": (f"Reach {EMAIL} now", "Reach [REDACTED:EMAIL] now", ("pii", "redact", "output"), ("alice", "example")),
    "secret": (
        f"Reach {AWS_KEY} now",
        "Reach [REDACTED:AWS_ACCESS_KEY] now",
        ("secrets", "redact", "output"),
        ("AKIA", "EXAMPLE"),
    ),
}
STREAMS = {
    # client API and the model: native (relayed as the provider sent it) and translated
    "openai-chat": ("/v1/chat/completions", "fake/fake-echo", chat, openai_text),
    "anthropic-messages": ("/v1/messages", "claude-echo", message, anthropic_text),
    "openai-chat-from-anthropic": ("/v1/chat/completions", "claude-echo", chat, openai_text),
    "anthropic-messages-from-openai": ("/v1/messages", "fake/fake-echo", message, anthropic_text),
}


@pytest.mark.parametrize("text_name", list(SPLIT_TEXTS))
@pytest.mark.parametrize("stream_name", list(STREAMS))
async def test_a_match_split_across_two_chunks_at_every_offset_never_reaches_the_client(
    guarded: Any, post: Any, stream_name: str, text_name: str
) -> None:
    text, expected, spec, parts = SPLIT_TEXTS[text_name]
    path, model, build, read = STREAMS[stream_name]
    key = await guarded(spec)
    await post(key, path, build("warm up", model=model, stream=True))
    for cut in range(len(text) + 1):
        response = await post(key, path, build(f"{text[:cut]}|{text[cut:]}", model=model, stream=True), warm=True)
        assert response.status == 200, (cut, response.body)
        got, deltas = read(response.body)
        assert got == expected, cut
        assert not any(part in response.body.decode() for part in parts), cut
        if cut > len("Reach "):  # what no match can start in is sent at once, not held to the end
            assert deltas[0].startswith("Reach"), (cut, deltas)
    events = meter.take(meter.pending)
    assert {e.guardrails for e in events if e.key_id == key.key_id} == {"", f"{spec[0]}:redact:1"}


async def test_a_streamed_answer_is_recorded_once_with_its_verdicts(guarded: Any, post: Any, usage_rows: Any) -> None:
    key = await guarded(("pii", "redact", "output"))
    response = await post(
        key, "/v1/chat/completions", chat(f"a {EMAIL}| b bob@exa|mple.org", model="fake/fake-echo", stream=True)
    )
    assert openai_text(response.body)[0] == "a [REDACTED:EMAIL] b [REDACTED:EMAIL]"
    [row] = await usage_rows(key)
    assert (row.guardrails, row.stream, row.error_code) == ("pii:redact:2", True, "")


async def test_an_output_block_cuts_the_stream_before_the_match(guarded: Any, post: Any, usage_rows: Any) -> None:
    key = await guarded(("secrets", "block", "output"))
    response = await post(
        key, "/v1/chat/completions", chat("here: AKIAIOSF|ODNN7EXAMPLE| more", model="fake/fake-echo", stream=True)
    )
    assert response.status == 200 and b"AKIA" not in response.body
    last = [line for line in response.body.split(b"\n") if line.startswith(b"data: ")][-1]
    assert orjson.loads(last[6:])["error"]["code"] == "guardrail_blocked"
    [row] = await usage_rows(key)
    assert (row.error_code, row.guardrails) == ("guardrail_blocked", "secrets:block:1")


async def test_an_output_block_of_a_json_answer_is_a_guardrail_blocked_error(guarded: Any, post: Any) -> None:
    key = await guarded(("secrets", "block", "output"))
    response = await post(key, "/v1/chat/completions", chat(f"here: {AWS_KEY}", model="fake/fake-echo"))
    assert response.status == 400 and AWS_KEY not in response.body.decode()
    assert orjson.loads(response.body)["error"]["code"] == "guardrail_blocked"


async def test_a_cache_hit_is_redacted_for_a_key_with_output_guardrails(
    guarded: Any, another_key: Any, attach: Any, post: Any, usage_rows: Any
) -> None:
    """The cache keeps answers as they came; each key's output guardrails apply when a hit is served."""
    from cachestore.flight import writes_settled

    plain = await guarded(cache_ttl_seconds=600)
    strict = await another_key(plain, cache_ttl_seconds=600)
    await attach(strict, ("pii", "redact", "output"), on="key")
    body = chat(f"{uuid.uuid4().hex} {EMAIL}", model="fake/fake-echo")
    first = await post(plain, "/v1/chat/completions", body)
    await writes_settled()
    hit = await post(strict, "/v1/chat/completions", body)
    streamed = await post(strict, "/v1/chat/completions", {**body, "stream": True})

    assert (first.headers["x-cache"], hit.headers["x-cache"], streamed.headers["x-cache"]) == ("miss", "hit", "hit")
    assert EMAIL in first.body.decode() and EMAIL not in hit.body.decode() and b"alice" not in streamed.body
    assert "[REDACTED:EMAIL]" in orjson.loads(hit.body)["choices"][0]["message"]["content"]
    rows = await usage_rows(strict)
    assert [(r.cache_hit, r.guardrails) for r in rows] == [(True, "pii:redact:1"), (True, "pii:redact:1")]
