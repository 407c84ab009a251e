"""Smart routers: a designator model picks which candidate answers a client.

Through the gateway under daphne (what the designator was asked, what the
client got, the usage rows), in-process (the timeout, and that a warm
routed request queries no database), then the pure parts, the catalog,
the commands, gateway_apply and the admin.
"""

import json
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO
from pathlib import Path
from typing import Any

import orjson
import pytest
from asgiref.sync import sync_to_async
from django.core.management import CommandError, call_command
from django.db import connection

from billing.meter import meter
from conftest import IssuedKey, Ledger, wait_until
from gateway import lifecycle
from gateway.kernel.context import ProviderConfig, RoutePlan, RouteTarget, TenantContext
from gateway.kernel.errors import GatewayError
from proxy import pipeline
from proxy.apis.chat import chat_call
from proxy.routers import designation, query_text
from proxy.routing import AliasPattern, Candidate, Catalog, SmartRouter, Wildcard
from proxy.tests.asgi import asgi_call
from proxy.tests.fake_upstream import DEFAULT_WORDS, FakeUpstream
from proxy.tests.live import LiveGateway
from proxy.upstream import upstream_sessions_close

ROUTED = "x-gateway-routed-to"
CODER_TEXT = "Writes, reviews and fixes code in any language."
CHATTER_TEXT = "Friendly small talk; cheap and quick."


@dataclass(frozen=True)
class Setup:
    """One test's own router and routes (fresh names: tests share the gateway)."""

    router: str
    coder: str
    chatter: str
    designator: str
    designator_upstream: str  # what the fake sees as the designator's model
    other: str  # a third routed model, not a candidate unless asked

    def upstream(self, model: str) -> str:
        return f"up-{model}"


def make_router(
    fake: FakeUpstream,
    *,
    answer: str | None = None,
    designator_upstream: str | None = None,
    fallback: str = "",  # "chatter" or "coder": that candidate; "": none named
    purpose: str = "Pick the cheapest model that can do the job.",
    with_other: bool = False,
    priced: bool = False,
) -> Setup:
    """Routes coder-*, chatter-* and designator-* to the fake, and a router
    over coder and chatter whose designator answers `answer` (committed;
    call it with the database unblocked)."""
    from billing.services import price_set
    from proxy.models import Provider
    from proxy.router_services import router_upsert
    from proxy.services import route_upsert

    tag = uuid.uuid4().hex[:8]
    s = Setup(f"auto-{tag}", f"coder-{tag}", f"chatter-{tag}", f"designator-{tag}", "", f"other-{tag}")
    s = Setup(**{**s.__dict__, "designator_upstream": designator_upstream or f"up-designator-{tag}"})
    provider = Provider.objects.get(name="fake")
    route_upsert(model=s.coder, provider=provider, upstream_model=s.upstream(s.coder), description=CODER_TEXT)
    route_upsert(model=s.chatter, provider=provider, upstream_model=s.upstream(s.chatter), description=CHATTER_TEXT)
    route_upsert(model=s.other, provider=provider, upstream_model=s.upstream(s.other))
    route_upsert(model=s.designator, provider=provider, upstream_model=s.designator_upstream)
    if priced:
        for upstream in (s.upstream(s.coder), s.upstream(s.chatter), s.designator_upstream):
            price_set(model=upstream, input_usd=Decimal("1"), output_usd=Decimal("1"))
    if answer is not None:
        fake.scripted[s.designator_upstream] = answer
    candidates = [s.coder, s.chatter, *([s.other] if with_other else [])]
    named = {"": "", "coder": s.coder, "chatter": s.chatter}[fallback]
    router_upsert(name=s.router, designator=s.designator, candidates=candidates, purpose=purpose, fallback=named)
    return s


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: dict[str, Any]


def post(gateway: LiveGateway, key: IssuedKey, body: dict[str, Any], path: str = "/v1/chat/completions") -> Answer:
    request = urllib.request.Request(
        gateway.url + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "anthropic-version": "2023-06-01", **key.headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            status, headers = response.status, {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as error:
        raw, status, headers = error.read(), error.code, {k.lower(): v for k, v in error.headers.items()}
    return Answer(status, headers, json.loads(raw) if not body.get("stream") else {"raw": raw.decode()})


def chat(s: Setup, text: str, **extra: Any) -> dict[str, Any]:
    return {"model": s.router, "messages": [{"role": "user", "content": text}], **extra}


def wait_served(gateway: LiveGateway, key: IssuedKey, model: str, timeout: float = 10.0) -> None:
    """Until the gateway's catalog has the router (it reloads on a config change)."""

    request = urllib.request.Request(f"{gateway.url}/v1/models/{model}", headers=key.headers)

    def served() -> bool:
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                # A wildcard route may answer the name too: only a router is owned by the gateway.
                return bool(json.loads(response.read())["owned_by"] == "gateway")
        except urllib.error.HTTPError:
            return False

    wait_until(served, timeout, f"the gateway never served the router {model}")


def seen(fake: FakeUpstream, upstream: str) -> list[dict[str, Any]]:
    return [r.body for r in fake.requests if r.body.get("model") == upstream]


@pytest.fixture
def routed(
    live_gateway: LiveGateway, django_db_blocker: Any, fake_upstream: FakeUpstream, key: IssuedKey
) -> Callable[..., Setup]:
    def build(**options: Any) -> Setup:
        with django_db_blocker.unblock():
            s = make_router(fake_upstream, **options)
        wait_served(live_gateway, key, s.router)
        return s

    return build


# --- Through the gateway ------------------------------------------------------


def test_the_designator_is_asked_with_each_candidates_description_and_a_schema_of_their_names(
    live_gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream, routed: Callable[..., Setup]
) -> None:
    s = routed()
    fake_upstream.scripted[s.designator_upstream] = json.dumps({"model": s.coder})
    post(live_gateway, key, chat(s, "Please fix my failing Python test."))

    [asked] = seen(fake_upstream, s.designator_upstream)
    system, user = asked["messages"]
    assert system["role"] == "system" and user == {"role": "user", "content": "Please fix my failing Python test."}
    assert f"- {s.coder}: {CODER_TEXT}" in system["content"]
    assert f"- {s.chatter}: {CHATTER_TEXT}" in system["content"]
    assert "Pick the cheapest model that can do the job." in system["content"]
    assert asked["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": "route",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {"model": {"type": "string", "enum": [s.coder, s.chatter]}},
                "required": ["model"],
                "additionalProperties": False,
            },
        },
    }
    assert (asked["temperature"], asked["max_tokens"], asked["stream"]) == (0, 50, False)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_the_client_is_answered_by_the_chosen_candidate_and_told_which_it_was(
    live_gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream, routed: Callable[..., Setup], stream: bool
) -> None:
    s = routed()
    fake_upstream.scripted[s.designator_upstream] = json.dumps({"model": s.chatter})
    answer = post(live_gateway, key, chat(s, "hello there!", stream=stream))

    assert (answer.status, answer.headers[ROUTED]) == (200, s.chatter)
    assert answer.headers["x-gateway-deployment"] == f"fake/{s.upstream(s.chatter)}"
    [sent] = seen(fake_upstream, s.upstream(s.chatter))
    assert sent["messages"] == [{"role": "user", "content": "hello there!"}]
    assert not seen(fake_upstream, s.upstream(s.coder))
    text = answer.body["raw"] if stream else answer.body["choices"][0]["message"]["content"]
    assert DEFAULT_WORDS[-1] in text


def test_the_designators_call_leaves_its_own_usage_row_marked_routing_billed_to_the_same_key(
    live_gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream, ledger: Ledger, routed: Callable[..., Setup]
) -> None:
    s = routed()
    fake_upstream.scripted[s.designator_upstream] = json.dumps({"model": s.coder})
    answer = post(live_gateway, key, chat(s, "write a sort function"))

    rows = ledger.wait(key.key_id, 2)
    by_purpose = {row.purpose: row for row in rows}
    routing, client = by_purpose["routing"], by_purpose[""]
    assert {row.api_key_id for row in rows} == {key.key_id}
    assert (routing.public_model, routing.upstream_model, routing.status_code) == (
        s.designator,
        s.designator_upstream,
        200,
    )
    assert (client.public_model, client.upstream_model) == (s.coder, s.upstream(s.coder))
    assert client.request_id == answer.headers["x-request-id"]
    assert routing.request_id == f"{client.request_id}~routing"


def test_an_anthropic_client_is_routed_the_same_way(
    live_gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream, routed: Callable[..., Setup]
) -> None:
    s = routed()
    fake_upstream.scripted[s.designator_upstream] = json.dumps({"model": s.coder})
    body = {
        "model": s.router,
        "max_tokens": 100,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "a regex"}]}],
    }
    answer = post(live_gateway, key, body, path="/v1/messages")
    assert (answer.status, answer.headers[ROUTED], answer.body["type"]) == (200, s.coder, "message")
    assert seen(fake_upstream, s.designator_upstream)[0]["messages"][1]["content"] == "a regex"


@pytest.mark.parametrize(
    ("script", "upstream", "expected"),
    [
        ("I would send this to CHATTER for sure.", None, "chatter"),  # plain text naming one candidate
        ('```json\n{"model": "CHATTER"}\n```', None, "chatter"),  # JSON in a code fence
        ("Either CODER or CHATTER could do it.", None, "fallback"),  # names two
        ("banana", None, "fallback"),  # nonsense
        ('{"model": "gpt-9000"}', None, "fallback"),  # not a candidate
        (None, "fake-error-400", "fallback"),  # the designator errors
        (None, "fake-plain-error", "fallback"),  # and one that is not even JSON
    ],
    ids=["plain-text", "fenced-json", "two-names", "nonsense", "not-a-candidate", "error", "plain-error"],
)
def test_an_answer_naming_no_single_candidate_or_an_error_sends_the_request_to_the_fallback(
    live_gateway: LiveGateway,
    key: IssuedKey,
    fake_upstream: FakeUpstream,
    routed: Callable[..., Setup],
    script: str | None,
    upstream: str | None,
    expected: str,
) -> None:
    s = routed(designator_upstream=upstream)  # no fallback named: the first candidate, coder
    names = {"chatter": s.chatter, "coder": s.coder, "fallback": s.coder}
    if script is not None:
        fake_upstream.scripted[s.designator_upstream] = script.replace("CHATTER", s.chatter).replace("CODER", s.coder)
    answer = post(live_gateway, key, chat(s, f"question {uuid.uuid4().hex}"))
    assert (answer.status, answer.headers[ROUTED]) == (200, names[expected])


def test_the_named_fallback_answers_when_the_designator_cannot_be_reached(
    live_gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream, routed: Callable[..., Setup]
) -> None:
    s = routed(designator_upstream="fake-error-400")
    assert post(live_gateway, key, chat(s, "q")).headers[ROUTED] == s.coder  # no fallback named: the first
    with_fallback = routed(designator_upstream="fake-error-400", fallback="chatter")
    assert post(live_gateway, key, chat(with_fallback, "q")).headers[ROUTED] == with_fallback.chatter


def test_identical_queries_reuse_a_recent_designation(
    live_gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream, ledger: Ledger, routed: Callable[..., Setup]
) -> None:
    s = routed()
    fake_upstream.scripted[s.designator_upstream] = json.dumps({"model": s.chatter})
    first = post(live_gateway, key, chat(s, "same question"))
    second = post(live_gateway, key, chat(s, "same question"))
    other = post(live_gateway, key, chat(s, "another question"))

    assert [a.headers[ROUTED] for a in (first, second, other)] == [s.chatter] * 3
    assert [m["messages"][1]["content"] for m in seen(fake_upstream, s.designator_upstream)] == [
        "same question",
        "another question",
    ]
    rows = ledger.wait(key.key_id, 5)  # 3 answers, 2 designations
    assert sorted(row.purpose for row in rows) == ["", "", "", "routing", "routing"]


def test_a_key_is_offered_only_the_candidates_it_may_use_and_needs_the_routers_name(
    live_gateway: LiveGateway,
    issue_key: Callable[..., IssuedKey],
    fake_upstream: FakeUpstream,
    django_db_blocker: Any,
) -> None:
    with django_db_blocker.unblock():
        s = make_router(fake_upstream, with_other=True)
    fake_upstream.scripted[s.designator_upstream] = json.dumps({"model": s.chatter})
    limited = issue_key(allowed_models=[s.router, "coder-*", "chatter-*"])  # not other-*
    wait_served(live_gateway, limited, s.router)

    answer = post(live_gateway, limited, chat(s, "hi"))
    assert (answer.status, answer.headers[ROUTED]) == (200, s.chatter)
    [asked] = seen(fake_upstream, s.designator_upstream)
    assert asked["response_format"]["json_schema"]["schema"]["properties"]["model"]["enum"] == [s.coder, s.chatter]
    assert s.other not in asked["messages"][0]["content"]

    one = issue_key(allowed_models=[s.router, s.coder])  # one candidate left: nothing to ask
    assert post(live_gateway, one, chat(s, "hi")).headers[ROUTED] == s.coder
    assert len(seen(fake_upstream, s.designator_upstream)) == 1

    without = issue_key(allowed_models=["coder-*", "chatter-*"])
    refused = post(live_gateway, without, chat(s, "hi"))
    assert (refused.status, refused.body["error"]["code"]) == (403, "model_not_allowed")
    assert len(seen(fake_upstream, s.designator_upstream)) == 1


def test_a_spent_budget_refuses_before_anything_goes_upstream(
    live_gateway: LiveGateway,
    key: IssuedKey,
    fake_upstream: FakeUpstream,
    ledger: Ledger,
    routed: Callable[..., Setup],
    django_db_blocker: Any,
) -> None:
    from accounts.models import ApiKey
    from billing.services import budget_set

    with django_db_blocker.unblock():  # before the gateway first sees the key (and its budgets)
        budget_set(limit_usd=Decimal("0.000001"), period="day", api_key=ApiKey.objects.get(pk=key.key_id))
    s = routed(priced=True)
    fake_upstream.scripted[s.designator_upstream] = json.dumps({"model": s.coder})

    answer = post(live_gateway, key, chat(s, "anything"))

    assert (answer.status, answer.body["error"]["code"]) == (429, "budget_exceeded")
    assert not seen(fake_upstream, s.designator_upstream) and not seen(fake_upstream, s.upstream(s.coder))
    assert ledger.wait(key.key_id, 0) == []


def guard_key(django_db_blocker: Any, key: IssuedKey, action: str) -> None:
    """A pii guardrail on `key`'s input (the catalog reloads on the change)."""
    from accounts.models import ApiKey
    from proxy.guardrails.services import guardrail_upsert

    with django_db_blocker.unblock():
        rail = guardrail_upsert(name=f"r-{uuid.uuid4().hex[:10]}", kind="pii", action=action, stage="input")[0]
        ApiKey.objects.get(pk=key.key_id).guardrails.add(rail)


def until_guarded(gateway: LiveGateway, key: IssuedKey, s: Setup, expect: Callable[[Answer], bool]) -> None:
    wait_until(
        lambda: expect(post(gateway, key, chat(s, "warm-up: write to jane@example.com"))),
        10,
        "the guardrail never applied",
    )


def test_a_prompt_a_guardrail_blocks_never_reaches_the_designator(
    live_gateway: LiveGateway,
    key: IssuedKey,
    fake_upstream: FakeUpstream,
    routed: Callable[..., Setup],
    django_db_blocker: Any,
) -> None:
    s = routed(answer=json.dumps({"model": "x"}))
    guard_key(django_db_blocker, key, "block")
    until_guarded(live_gateway, key, s, lambda a: a.status == 400)
    marker = uuid.uuid4().hex

    answer = post(live_gateway, key, chat(s, f"{marker}: my mail is jane@example.com"))

    assert (answer.status, answer.body["error"]["code"]) == (400, "guardrail_blocked")
    assert not [r for r in fake_upstream.requests if marker in json.dumps(r.body)]


def test_the_designator_sees_the_query_as_the_input_guardrails_redacted_it(
    live_gateway: LiveGateway,
    key: IssuedKey,
    fake_upstream: FakeUpstream,
    routed: Callable[..., Setup],
    django_db_blocker: Any,
) -> None:
    s = routed()
    fake_upstream.scripted[s.designator_upstream] = json.dumps({"model": s.coder})
    guard_key(django_db_blocker, key, "redact")
    until_guarded(
        live_gateway, key, s, lambda a: "[REDACTED:EMAIL]" in json.dumps(seen(fake_upstream, s.upstream(s.coder)))
    )
    marker = uuid.uuid4().hex

    answer = post(live_gateway, key, chat(s, f"{marker}: my mail is jane@example.com"))

    assert (answer.status, answer.headers[ROUTED]) == (200, s.coder)
    asked = [json.dumps(b) for b in seen(fake_upstream, s.designator_upstream) if marker in json.dumps(b)]
    forwarded = [json.dumps(b) for b in seen(fake_upstream, s.upstream(s.coder)) if marker in json.dumps(b)]
    assert len(asked) == 1 and len(forwarded) == 1
    assert "jane@example.com" not in asked[0] + forwarded[0]
    assert "[REDACTED:EMAIL]" in asked[0] and "[REDACTED:EMAIL]" in forwarded[0]


def test_a_router_is_listed_and_retrievable_among_the_models(
    live_gateway: LiveGateway, key: IssuedKey, routed: Callable[..., Setup]
) -> None:
    s = routed()
    request = urllib.request.Request(f"{live_gateway.url}/v1/models", headers=key.headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        listed = {m["id"]: m["owned_by"] for m in json.loads(response.read())["data"]}
    assert listed[s.router] == "gateway" and s.coder in listed


def test_a_router_is_asked_before_a_wildcard_route_and_an_alias_pattern_matching_its_name(
    live_gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream, django_db_blocker: Any
) -> None:
    from proxy.router_services import router_upsert
    from proxy.services import alias_upsert

    with django_db_blocker.unblock():
        s = make_router(fake_upstream)
        name = f"fake/{s.router}"  # the session's `fake/*` wildcard route matches it too
        alias_upsert(pattern=f"fake/{s.router[:9]}*", target=s.other)
        router_upsert(name=name, designator=s.designator, candidates=[s.coder, s.chatter])
    fake_upstream.scripted[s.designator_upstream] = json.dumps({"model": s.chatter})
    wait_served(live_gateway, key, name)

    answer = post(live_gateway, key, {**chat(s, "hi"), "model": name})

    assert (answer.status, answer.headers[ROUTED]) == (200, s.chatter)
    assert seen(fake_upstream, s.designator_upstream) and not seen(fake_upstream, s.upstream(s.other))
    assert not seen(fake_upstream, s.router)  # the wildcard would have sent this name upstream


# --- In-process: the timeout, and no database query once warm ------------------------


@pytest.fixture
async def in_process(
    gateway_config: None, django_db_blocker: Any, monkeypatch: Any, fake_upstream: FakeUpstream
) -> Any:
    monkeypatch.setattr(lifecycle, "GATEWAY_BACKGROUND", False)  # no writer, no poller
    meter.take(meter.pending)
    yield
    meter.take(meter.pending)
    await upstream_sessions_close()  # this test's loop ends with the test


async def committed(blocker: Any, fn: Callable[[], Any]) -> Any:
    def run() -> Any:
        with blocker.unblock():
            try:
                return fn()
            finally:
                connection.close()  # this thread's connection would outlive the test database

    return await sync_to_async(run)()


async def call(key: IssuedKey, body: dict[str, Any]) -> Any:
    from gateway.asgi import application

    return await asgi_call(application, "POST", "/v1/chat/completions", headers=key.headers, body=orjson.dumps(body))


async def test_a_designator_slower_than_the_timeout_sends_the_request_to_the_fallback(
    in_process: None, key: IssuedKey, fake_upstream: FakeUpstream, django_db_blocker: Any, settings: Any
) -> None:
    settings.PROXY_ROUTER_TIMEOUT_SECONDS = 0.3
    s = await committed(django_db_blocker, lambda: make_router(fake_upstream, designator_upstream="fake-slowheaders-5"))
    with django_db_blocker.unblock():
        import time

        started = time.monotonic()
        answer = await call(key, chat(s, "hurry"))
        waited = time.monotonic() - started
    assert (answer.status, answer.headers[ROUTED]) == (200, s.coder)
    assert waited < 3  # the fallback answered long before the designator would have
    events = meter.take(meter.pending)
    assert sorted((e.purpose, e.public_model) for e in events) == [("", s.coder), ("routing", s.designator)]
    assert {e.key_id for e in events} == {key.key_id}


async def test_a_warm_routed_request_makes_no_database_query(
    in_process: None, key: IssuedKey, fake_upstream: FakeUpstream, django_db_blocker: Any
) -> None:
    s = await committed(django_db_blocker, lambda: make_router(fake_upstream))
    fake_upstream.scripted[s.designator_upstream] = json.dumps({"model": s.chatter})
    with django_db_blocker.unblock():  # loads the key and the catalog
        assert (await call(key, chat(s, "warm up"))).status == 200
    meter.take(meter.pending)

    answer = await call(key, chat(s, "now cold database"))  # pytest-django refuses any query here

    assert (answer.status, answer.headers[ROUTED]) == (200, s.chatter)
    events = meter.take(meter.pending)
    assert sorted(e.purpose for e in events) == ["", "routing"]


# --- Pure parts ------------------------------------------------------------------


NAMES = ["gpt-4o", "gpt-4o-mini", "coder"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"model": "gpt-4o-mini"}', "gpt-4o-mini"),
        ('{"model": "Coder"}', "coder"),
        ('"coder"', "coder"),
        ("coder", "coder"),
        ("Use gpt-4o.", "gpt-4o"),  # a sentence's full stop ends the name
        ("gpt-4o-mini is enough", "gpt-4o-mini"),  # gpt-4o is not named by gpt-4o-mini
        ("gpt-4o or coder", None),
        ('{"model": "gpt-5"}', None),
        ('{"choice": 1}', None),
        ("", None),
    ],
)
def test_a_designation_is_json_naming_a_candidate_or_text_naming_exactly_one(text: str, expected: str | None) -> None:
    assert designation(text, NAMES) == expected


def test_the_query_is_the_last_user_messages_text_in_every_dialect() -> None:
    chat = {
        "messages": [
            {"role": "user", "content": "old"},
            {"role": "assistant", "content": "x"},
            {"role": "user", "content": "new"},
        ]
    }
    assert query_text(chat) == "new"
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image"}]}]}
    assert query_text(parts) == "a"
    assert query_text({"input": "responses text"}) == "responses text"
    assert query_text({"input": [{"role": "user", "content": [{"type": "input_text", "text": "item"}]}]}) == "item"
    assert query_text({"prompt": ["one", "two"]}) == "two"


FAKE = ProviderConfig(name="p", kind="openai", base_url="http://127.0.0.1:9/v1")


def plan(name: str, upstream: str, deployment_id: int) -> RoutePlan:
    return RoutePlan(public_model=name, deployments=(RouteTarget(name, FAKE, upstream, None, deployment_id),))


def ctx(allowed: tuple[str, ...] | None = None) -> TenantContext:
    return TenantContext(
        tenant_id=1, tenant_slug="t", tenant_active=True, key_id=1, key_prefix="sk-gw-x", allowed_models=allowed
    )


def catalog_with_router(*candidates: str) -> Catalog:
    return Catalog(
        routes={"coder": plan("coder", "up-coder", 1), "chatter": plan("chatter", "up-chatter", 2)},
        wildcards=(Wildcard("auto", plan("auto*", "wild-", 3)),),
        prices={},
        aliases={"big": "coder"},
        alias_patterns=(AliasPattern("auto-*", "chatter"),),
        routers={"auto": SmartRouter("auto", "coder", tuple(Candidate(c) for c in candidates), candidates[0])},
    )


async def test_the_resolution_order_is_smart_router_then_alias_then_wildcard_route() -> None:
    """`auto` is a router, and also matched by a wildcard route `auto*`; a
    router with one candidate needs no designator call."""
    cat = catalog_with_router("chatter")
    found, routed_to = await pipeline.route(cat, ctx(), chat_call(orjson.dumps(chat_body("auto"))), "req_1")
    assert (routed_to, found.deployments[0].upstream_model) == ("chatter", "up-chatter")
    found, routed_to = await pipeline.route(cat, ctx(), chat_call(orjson.dumps(chat_body("auto-x"))), "req_2")
    assert (routed_to, found.deployments[0].upstream_model) == ("", "up-chatter")  # the alias pattern
    found, routed_to = await pipeline.route(cat, ctx(), chat_call(orjson.dumps(chat_body("autox"))), "req_3")
    assert (routed_to, found.deployments[0].upstream_model) == ("", "wild-x")  # the wildcard route


async def test_a_routed_plan_falls_back_to_the_routers_fallback_after_the_chosen_candidate() -> None:
    cat = catalog_with_router("chatter", "coder")
    body = chat_call(orjson.dumps({**chat_body("auto"), "model": "auto"}))
    found, routed_to = await pipeline.route(cat, ctx(("auto", "coder")), body, "req_1")  # chatter not allowed
    assert (routed_to, found.fallbacks) == ("coder", ())
    with pytest.raises(GatewayError) as refused:
        await pipeline.route(cat, ctx(("coder", "chatter")), body, "req_2")
    assert (refused.value.status, refused.value.code) == (403, "model_not_allowed")


def chat_body(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


# --- The catalog, the commands, gateway_apply and the admin ---------------------------


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue().strip()


def routes(*names: str, provider: str = "a", descriptions: dict[str, str] | None = None, **upstreams: str) -> Any:
    from proxy.models import Provider
    from proxy.services import route_upsert

    p = Provider.objects.filter(name=provider).first() or Provider.objects.create(
        name=provider, base_url=f"https://{provider}.test/v1"
    )
    for name in names:
        route_upsert(
            model=name,
            provider=p,
            upstream_model=upstreams.get(name.replace("-", "_"), ""),
            description=(descriptions or {}).get(name),
        )
    return p


@pytest.mark.django_db
def test_router_create_checks_names_and_running_it_again_updates() -> None:
    from proxy.models import Router

    routes("coder", "chatter", "judge", "openai/*")
    assert run("router_create", "auto", "--designator", "judge", "--candidates", "coder,chatter") == (
        "saved router auto: judge picks one of coder, chatter (fallback coder)"
    )
    assert run("router_create", "auto", "--designator", "judge", "--candidates", "coder,chatter") == (
        "unchanged router auto: judge picks one of coder, chatter (fallback coder)"
    )
    out = run(
        "router_create", "auto", "--designator", "judge", "--candidates", "coder, chatter, openai/gpt-4.1",
        "--purpose", "cheap first", "--fallback", "chatter",
    )  # fmt: skip
    assert out == "saved router auto: judge picks one of coder, chatter, openai/gpt-4.1 (fallback chatter)"
    router = Router.objects.get(name="auto")
    assert (router.candidates, router.purpose, router.fallback) == (
        ["coder", "chatter", "openai/gpt-4.1"],
        "cheap first",
        "chatter",
    )
    # Without --fallback and --purpose, they are kept (the fallback while still a candidate).
    run("router_create", "auto", "--designator", "judge", "--candidates", "chatter,coder")
    assert (Router.objects.get(name="auto").fallback, Router.objects.get(name="auto").purpose) == (
        "chatter",
        "cheap first",
    )
    assert run("router_create", "auto", "--delete") == "deleted router auto"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("auto", "--designator", "nope", "--candidates", "coder"),
            "the designator 'nope' is not a model the gateway routes",
        ),
        (("auto", "--designator", "judge", "--candidates", "coder,ghost"), "the candidate 'ghost' is not a model"),
        (
            ("auto", "--designator", "judge", "--candidates", "coder", "--fallback", "chatter"),
            "must be one of the candidates",
        ),
        (("auto", "--designator", "judge", "--candidates", "coder,coder"), "listed twice"),
        (("coder", "--designator", "judge", "--candidates", "chatter"), "a route or alias of that name exists"),
        (("big", "--designator", "judge", "--candidates", "chatter"), "a route or alias of that name exists"),
        (("auto-*", "--designator", "judge", "--candidates", "chatter"), "must be exact"),
        (("other", "--designator", "judge", "--candidates", "first"), "the candidate 'first' is a router"),
        (("auto",), "--designator MODEL and --candidates A,B are required"),
    ],
)
def test_router_create_refuses_what_could_not_route(args: tuple[str, ...], message: str) -> None:
    routes("coder", "chatter", "judge")
    run("alias_create", "big", "--to", "coder")
    run("router_create", "first", "--designator", "judge", "--candidates", "coder")
    with pytest.raises(CommandError, match=message):
        run("router_create", *args)


@pytest.mark.django_db
def test_a_route_or_alias_cannot_take_a_routers_name() -> None:
    routes("coder", "judge")
    run("router_create", "auto", "--designator", "judge", "--candidates", "coder")
    with pytest.raises(CommandError, match="a smart router of that name exists"):
        run("route_create", "auto", "--provider", "a")
    with pytest.raises(CommandError, match="a smart router of that name exists"):
        run("alias_create", "auto", "--to", "coder")


@pytest.mark.django_db
def test_route_create_sets_a_description_and_a_rerun_without_it_keeps_it() -> None:
    from proxy.models import Route

    routes("judge")
    assert "saved route" in run("route_create", "coder", "--provider", "a", "--description", "Good at code.")
    assert "unchanged route" in run("route_create", "coder", "--provider", "a")
    assert Route.objects.get(model="coder").description == "Good at code."


@pytest.mark.django_db
def test_the_catalog_holds_routers_with_their_candidates_descriptions_and_leaves_out_dead_candidates(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from proxy.catalog_loader import catalog_load
    from proxy.models import Router

    routes("coder", "judge", "openai/*", descriptions={"coder": "Code.", "openai/*": "Anything OpenAI has."})
    run("alias_create", "big", "--to", "coder")
    Router.objects.create(name="auto", designator="judge", candidates=["big", "openai/o3", "gone"], fallback="gone")
    Router.objects.create(name="dead", designator="judge", candidates=["gone"])
    cat = catalog_load()  # the routers are one more query: see test_aliases
    router = cat.routers["auto"]
    assert router.candidates == (Candidate("big", "Code."), Candidate("openai/o3", "Anything OpenAI has."))
    assert router.fallback == "big"  # the named fallback is not served: the first candidate
    assert "dead" not in cat.routers
    assert "router auto: candidate 'gone' is not a served model; left out" in caplog.text


OPENROUTER = {
    "data": [
        {"id": "openai/gpt-4o", "name": "OpenAI: GPT-4o", "description": "OpenAI's flagship multimodal model."},
        {"id": "openai/gpt-4o:extended", "description": "The extended variant."},
        {"id": "anthropic/claude-3.5-haiku", "description": "Anthropic's fastest model."},
        {"id": "meta-llama/llama-3-8b-instruct", "description": "  A small\nopen   model. "},
        {"id": "mistralai/no-description", "description": ""},
    ]
}


@pytest.mark.django_db
def test_descriptions_sync_from_a_file_fills_only_empty_descriptions(tmp_path: Path) -> None:
    from proxy.models import Route

    routes(
        "fast", "haiku", "llama", "mine", "unknown", "openai/*",
        descriptions={"mine": "Written by staff."},
        fast="gpt-4o-2024-08-06", haiku="claude-3-5-haiku-20241022", llama="llama-3-8b-instruct",
    )  # fmt: skip
    saved = tmp_path / "models.json"
    saved.write_text(json.dumps({**OPENROUTER, "data": [*OPENROUTER["data"], {"id": "mine", "description": "Other."}]}))

    out = run("descriptions_sync", "--file", str(saved), "--skip-providers")

    described = dict(Route.objects.values_list("model", "description"))
    assert described == {
        "fast": "OpenAI's flagship multimodal model.",  # undated, unprefixed: as prices match
        "haiku": "Anthropic's fastest model.",  # 3-5 is 3.5
        "llama": "A small open model.",
        "mine": "Written by staff.",  # never replaced
        "unknown": "",
        "openai/*": "",  # wildcards are left to staff
    }
    assert out.splitlines()[-1] == "3 descriptions filled, 1 routes without one in any list"
    assert "1 descriptions filled" not in run("descriptions_sync", "--file", str(saved), "--skip-providers")


@pytest.fixture
def models_server() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """OpenRouter's list at /openrouter/models, and a provider's own at
    /provider/v1/models (which records the credential it was asked with)."""
    asked: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append({"path": self.path, "authorization": self.headers.get("Authorization", "")})
            if self.path == "/openrouter/models":
                body = OPENROUTER
            elif self.path == "/provider/v1/models":
                body = {"data": [{"id": "house-model", "description": "The provider's own words."}, {"id": "plain"}]}
            else:
                self.send_response(404)
                self.end_headers()
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", asked
    server.shutdown()
    server.server_close()


@pytest.mark.django_db
def test_descriptions_sync_asks_the_providers_own_model_lists_first_then_openrouters(
    models_server: tuple[str, list[dict[str, str]]], settings: Any
) -> None:
    from proxy.models import Route
    from proxy.services import provider_upsert

    url, asked = models_server
    provider_upsert(name="house", kind="openai-compatible", base_url=f"{url}/provider/v1", api_key="sk-house-secret")
    routes("own", "fast", provider="house", own="house-model", fast="gpt-4o")
    settings.PROXY_DESCRIPTIONS_URL = f"{url}/openrouter/models"

    out = run("descriptions_sync")

    assert dict(Route.objects.values_list("model", "description")) == {
        "own": "The provider's own words.",
        "fast": "OpenAI's flagship multimodal model.",
    }
    assert "described own (from house)" in out and "described fast (from openrouter)" in out
    assert {"path": "/provider/v1/models", "authorization": "Bearer sk-house-secret"} in asked


@pytest.mark.django_db
def test_descriptions_sync_says_so_when_the_list_cannot_be_read(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("<html>")
    with pytest.raises(CommandError, match="cannot read the model list"):
        run("descriptions_sync", "--file", str(tmp_path / "bad.json"))


ROUTERS_FILE: dict[str, Any] = {
    "providers": [{"name": "a", "base_url": "https://a.test/v1"}],
    "routes": [
        {"model": "coder", "provider": "a", "description": "Code."},
        {"model": "chatter", "provider": "a"},
        {"model": "judge", "provider": "a"},
    ],
    "routers": [
        {
            "name": "auto",
            "designator": "judge",
            "candidates": ["coder", "chatter"],
            "purpose": "p",
            "fallback": "chatter",
        }
    ],
}


@pytest.mark.django_db
def test_gateway_apply_sets_routers_and_descriptions_and_applying_again_changes_nothing() -> None:
    from proxy.apply import ApplyError, config_apply
    from proxy.models import Route, Router

    assert config_apply(ROUTERS_FILE) == {"provider saved": 1, "route saved": 3, "router saved": 1}
    assert config_apply(ROUTERS_FILE) == {"provider unchanged": 1, "route unchanged": 3, "router unchanged": 1}
    router = Router.objects.get()
    assert (router.designator, router.candidates, router.purpose, router.fallback) == (
        "judge",
        ["coder", "chatter"],
        "p",
        "chatter",
    )
    assert Route.objects.get(model="coder").description == "Code."
    Route.objects.filter(model="chatter").update(description="Synced.")
    assert "route saved" not in config_apply(ROUTERS_FILE)  # a file without a description keeps the synced one
    assert Route.objects.get(model="chatter").description == "Synced."
    assert config_apply({**ROUTERS_FILE, "routers": []})["router removed"] == 1
    bad = {**ROUTERS_FILE, "routers": [{"name": "auto", "designator": "judge", "candidates": ["coder", "ghost"]}]}
    with pytest.raises(ApplyError, match="the candidate 'ghost' is not a model the gateway routes"):
        config_apply(bad)


@pytest.mark.django_db
def test_saving_a_router_tells_every_process_to_reload() -> None:
    from accounts.models import ConfigVersion
    from proxy.models import Router

    before = ConfigVersion.objects.get_or_create(pk=1)[0].version
    Router.objects.create(name="auto", designator="judge", candidates=["coder"])
    assert ConfigVersion.objects.get(pk=1).version == before + 1


@pytest.mark.django_db
def test_the_admin_lists_routers_and_refuses_a_fallback_that_is_no_candidate(admin_client: Any) -> None:
    from proxy.models import Router

    routes("coder", "chatter", "judge", descriptions={"coder": "Code."})
    run("router_create", "auto", "--designator", "judge", "--candidates", "coder,chatter")
    page = admin_client.get("/admin/proxy/router/").content.decode()
    assert "auto" in page and "coder, chatter" in page
    form = {
        "name": "smart",
        "designator": "judge",
        "candidates": "coder, chatter",
        "purpose": "",
        "fallback": "judge",
        "is_active": "on",
    }
    refused = admin_client.post("/admin/proxy/router/add/", form)
    assert "must be one of the candidates" in refused.content.decode()
    admin_client.post("/admin/proxy/router/add/", {**form, "fallback": "chatter"})
    assert Router.objects.get(name="smart").candidates == ["coder", "chatter"]
    routes_page = admin_client.get("/admin/proxy/route/").content.decode()
    assert ">Described<" in routes_page
