"""Augmentors: a designator decides whether to search or scrape, and the
target answers with what was found in its prompt.

Through the gateway under daphne, against a fake designator and target (the
session's fake upstream) and a fake SearXNG, Perplexity and web pages
(proxy.tests.fake_web): what the client got, what the target was sent, the
header, the usage rows and the trace. Then the resolution order; in-process
the designator's timeout and that a warm augmented request queries no
database; the pure parts, the commands, gateway_apply and the admin.
"""

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
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
from proxy.augment import Decision, augmented_body, context_block, decision_parse
from proxy.augment_search import SearchResult
from proxy.dialects import ClientCall, Dialect
from proxy.scrape import Page
from proxy.tests.asgi import asgi_call
from proxy.tests.fake_upstream import DEFAULT_WORDS, FakeUpstream
from proxy.tests.fake_web import FakeWeb
from proxy.tests.live import LiveGateway
from proxy.upstream import upstream_sessions_close

AUGMENTED = "x-gateway-augmented"
PERPLEXITY_KEY = "pplx-test-0123456789"


@pytest.fixture(scope="module")
def web() -> Iterator[FakeWeb]:
    fake = FakeWeb().start_in_thread()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def trace_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("augment-traces")


@pytest.fixture(scope="module")
def gateway(gateway_config: None, web: FakeWeb, trace_dir: Path) -> Iterator[LiveGateway]:
    """A gateway whose search providers are the fake, and which may scrape
    the fake's pages on 127.0.0.1 (AUGMENT_SCRAPE_ALLOW_PRIVATE)."""
    live = LiveGateway(env=augmenting_env(web, TRACE_DIR=str(trace_dir), TRACE_SINK="file")).start()
    yield live
    live.terminate()


def augmenting_env(web: FakeWeb, **extra: str) -> dict[str, str]:
    return {
        "AUGMENT_SEARXNG_URL": web.url,
        "AUGMENT_PERPLEXITY_BASE_URL": f"{web.url}/perplexity",
        "PERPLEXITY_API_KEY": PERPLEXITY_KEY,
        "AUGMENT_SCRAPE_ALLOW_PRIVATE": "true",
        "AUGMENT_DESIGNATOR_TIMEOUT_SECONDS": "5",
        **extra,
    }


@dataclass(frozen=True)
class Setup:
    """One test's own augmentor and routes (fresh names: tests share the gateway)."""

    name: str
    designator: str
    target: str
    designator_upstream: str  # what the fake sees as the designator's model

    @property
    def target_upstream(self) -> str:
        return f"up-{self.target}"


def make_augmentor(name: str | None = None, designator_upstream: str | None = None, **options: Any) -> Setup:
    """Routes designator-* and target-* to the fake upstream and an
    augmentor over them (committed; call it with the database unblocked)."""
    from proxy.augmentor_services import AugmentorSpec, augmentor_upsert
    from proxy.models import Provider
    from proxy.services import route_upsert

    tag = uuid.uuid4().hex[:8]
    s = Setup(name or f"researcher-{tag}", f"designator-{tag}", f"target-{tag}", designator_upstream or f"up-d-{tag}")
    provider = Provider.objects.get(name="fake")
    route_upsert(model=s.designator, provider=provider, upstream_model=s.designator_upstream)
    route_upsert(model=s.target, provider=provider, upstream_model=s.target_upstream)
    augmentor_upsert(AugmentorSpec(name=s.name, designator=s.designator, target=s.target, **options))
    return s


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    raw: bytes

    def json(self) -> Any:
        return json.loads(self.raw)


def post(gateway: LiveGateway, key: IssuedKey, body: dict[str, Any], path: str = "/v1/chat/completions") -> Answer:
    request = urllib.request.Request(
        gateway.url + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "anthropic-version": "2023-06-01", **key.headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return Answer(response.status, {k.lower(): v for k, v in response.headers.items()}, response.read())
    except urllib.error.HTTPError as error:
        return Answer(error.code, {k.lower(): v for k, v in error.headers.items()}, error.read())


def wait_served(gateway: LiveGateway, key: IssuedKey, model: str, timeout: float = 10.0) -> None:
    """Until the gateway's catalog has the augmentor (it reloads on a config change)."""
    request = urllib.request.Request(f"{gateway.url}/v1/models/{model}", headers=key.headers)

    def served() -> bool:
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return bool(json.loads(response.read())["owned_by"] == "gateway")  # not a wildcard route's answer
        except urllib.error.HTTPError:
            return False

    wait_until(served, timeout, f"the gateway never served the augmentor {model}")


def chat(s: Setup, text: str, **extra: Any) -> dict[str, Any]:
    return {"model": s.name, "messages": [{"role": "user", "content": text}], **extra}


def seen(fake: FakeUpstream, upstream: str) -> list[dict[str, Any]]:
    return [r.body for r in fake.requests if r.body.get("model") == upstream]


@pytest.fixture
def augmentor(
    gateway: LiveGateway, django_db_blocker: Any, fake_upstream: FakeUpstream, key: IssuedKey
) -> Callable[..., Setup]:
    """Build one: `decision` is what its designator answers."""

    def build(decision: str | None = None, **options: Any) -> Setup:
        with django_db_blocker.unblock():
            s = make_augmentor(**options)
        if decision is not None:
            fake_upstream.scripted[s.designator_upstream] = decision
        wait_served(gateway, key, s.name)
        return s

    return build


ARTICLE = """<html><head><title>Gateways explained</title><style>p {color: red}</style>
<script>var tracking = "do not read me";</script></head>
<body><nav>Home | About</nav><article><h1>LLM gateways</h1>
<p>A gateway sits between <b>clients</b> and providers.</p><p>It meters every call.</p></article>
<footer>Copyright nobody</footer></body></html>"""


# --- Through the gateway ------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_search_decision_puts_the_searxng_results_into_the_prompt_the_target_answers(
    gateway: LiveGateway,
    key: IssuedKey,
    fake_upstream: FakeUpstream,
    web: FakeWeb,
    augmentor: Callable[..., Setup],
    stream: bool,
) -> None:
    marker = uuid.uuid4().hex
    s = augmentor(f"search: llm gateway {marker}", max_search_results=2)
    web.results = [
        {"title": "First result", "url": "https://one.example/a", "content": "One says gateways meter calls."},
        {"title": "Second result", "url": "https://two.example/b", "content": "Two says gateways route."},
        {"title": "Third result", "url": "https://three.example/c", "content": "Beyond the limit."},
    ]

    answer = post(gateway, key, chat(s, "What does an LLM gateway do?", stream=stream))

    assert (answer.status, answer.headers[AUGMENTED]) == (200, "search")
    text = answer.raw.decode() if stream else answer.json()["choices"][0]["message"]["content"]
    assert DEFAULT_WORDS[-1] in text  # the target's answer, as the fake wrote it
    [searched] = [r for r in web.seen("/search") if marker in r.query.get("q", "")]
    assert searched.query == {"q": f"llm gateway {marker}", "format": "json"}
    [asked] = seen(fake_upstream, s.designator_upstream)
    assert asked["messages"][1] == {"role": "user", "content": "What does an LLM gateway do?"}
    assert "search+scrape:" in asked["messages"][0]["content"] and asked["stream"] is False
    [sent] = seen(fake_upstream, s.target_upstream)
    context, user = sent["messages"]
    assert user == {"role": "user", "content": "What does an LLM gateway do?"}
    assert context["role"] == "system"
    assert f'(search: "llm gateway {marker}")' in context["content"]
    assert "[1] First result\nURL: https://one.example/a\nOne says gateways meter calls." in context["content"]
    assert "[2] Second result" in context["content"] and "Third result" not in context["content"]


def test_the_designator_and_the_target_each_leave_a_usage_row_billed_to_the_key(
    gateway: LiveGateway, key: IssuedKey, ledger: Ledger, web: FakeWeb, augmentor: Callable[..., Setup]
) -> None:
    s = augmentor("search: anything")
    web.results = [{"title": "T", "url": "https://t.example/", "content": "c"}]

    answer = post(gateway, key, chat(s, "a question"))

    rows = ledger.wait(key.key_id, 2)
    by_purpose = {row.purpose: row for row in rows}
    designator, client = by_purpose["augmentation"], by_purpose[""]
    assert {row.api_key_id for row in rows} == {key.key_id} and len(rows) == 2
    assert (designator.public_model, designator.upstream_model, designator.status_code) == (
        s.designator,
        s.designator_upstream,
        200,
    )
    assert (client.public_model, client.upstream_model, client.status_code) == (s.target, s.target_upstream, 200)
    assert client.request_id == answer.headers["x-request-id"]
    assert designator.request_id == f"{client.request_id}~augmentation"


def test_a_scrape_decision_reads_the_pages_as_text_without_scripts_or_page_furniture(
    gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream, web: FakeWeb, augmentor: Callable[..., Setup]
) -> None:
    url = web.page(f"article-{uuid.uuid4().hex[:6]}", ARTICLE)
    s = augmentor(f"scrape: {url}")

    answer = post(gateway, key, chat(s, f"Summarise {url}"))

    assert (answer.status, answer.headers[AUGMENTED]) == (200, "scrape")
    [sent] = seen(fake_upstream, s.target_upstream)
    context = sent["messages"][0]["content"]
    assert f"Page {url} (Gateways explained):\nLLM gateways\nA gateway sits between clients and providers." in context
    assert "It meters every call." in context
    for furniture in ("do not read me", "color: red", "Home | About", "Copyright"):
        assert furniture not in context


def test_search_and_scrape_reads_the_first_results_pages_up_to_the_limit(
    gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream, web: FakeWeb, augmentor: Callable[..., Setup]
) -> None:
    tag = uuid.uuid4().hex[:6]
    first = web.page(f"first-{tag}", "<p>The first page's own words.</p>")
    second = web.page(f"second-{tag}", "<p>The second page.</p>")
    s = augmentor("search+scrape: gateway pages", max_scrape_urls=1)
    web.results = [
        {"title": "First", "url": first, "content": "first snippet"},
        {"title": "Second", "url": second, "content": "second snippet"},
    ]

    answer = post(gateway, key, chat(s, "Tell me about gateways"))

    assert (answer.status, answer.headers[AUGMENTED]) == (200, "search+scrape")
    context = seen(fake_upstream, s.target_upstream)[0]["messages"][0]["content"]
    assert "first snippet" in context and "second snippet" in context  # both results
    assert "The first page's own words." in context and "The second page." not in context  # one page
    assert not web.seen(f"/page/second-{tag}")


def test_perplexity_is_asked_with_its_key_and_its_answer_and_sources_join_the_prompt(
    gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream, web: FakeWeb, augmentor: Callable[..., Setup]
) -> None:
    marker = uuid.uuid4().hex
    web.perplexity_sources = [{"title": "Source A", "url": "https://a.example/", "date": "2026-01-01"}]
    s = augmentor(f"search: {marker}", search_provider="perplexity")

    answer = post(gateway, key, chat(s, "What is the answer?"))

    assert (answer.status, answer.headers[AUGMENTED]) == (200, "search")
    [asked] = [r for r in web.seen("/perplexity/chat/completions") if marker.encode() in r.body]
    assert asked.headers["Authorization"] == f"Bearer {PERPLEXITY_KEY}"
    assert json.loads(asked.body) == {"model": "sonar", "messages": [{"role": "user", "content": marker}]}
    context = seen(fake_upstream, s.target_upstream)[0]["messages"][0]["content"]
    assert "[1] Perplexity\nPerplexity found that the answer is 42." in context
    assert "[2] Source A\nURL: https://a.example/" in context


def test_what_joins_the_prompt_is_cut_to_the_augmentors_token_cap(
    gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream, web: FakeWeb, augmentor: Callable[..., Setup]
) -> None:
    url = web.page(f"long-{uuid.uuid4().hex[:6]}", "<p>" + "lorem ipsum " * 2000 + "</p>")
    s = augmentor(f"scrape: {url}", max_context_tokens=50)

    answer = post(gateway, key, chat(s, "read it"))

    assert (answer.status, answer.headers[AUGMENTED]) == (200, "scrape")
    context = seen(fake_upstream, s.target_upstream)[0]["messages"][0]["content"]
    assert 150 < len(context.encode()) <= 200  # 50 tokens at four bytes a token
    assert "lorem ipsum" in context


def test_an_anthropic_client_gets_the_context_in_its_system_prompt(
    gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream, web: FakeWeb, augmentor: Callable[..., Setup]
) -> None:
    s = augmentor("search: claude")
    web.results = [{"title": "Claude", "url": "https://c.example/", "content": "An assistant."}]
    body = {
        "model": s.name,
        "max_tokens": 100,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "who is claude?"}]}],
    }

    answer = post(gateway, key, body, path="/v1/messages")

    assert (answer.status, answer.headers[AUGMENTED], answer.json()["type"]) == (200, "search", "message")
    assert seen(fake_upstream, s.designator_upstream)[0]["messages"][1]["content"] == "who is claude?"
    system = [m for m in seen(fake_upstream, s.target_upstream)[0]["messages"] if m["role"] == "system"]
    assert system[0]["content"].startswith("Be brief.\n\nContext found on the web")
    assert "[1] Claude\nURL: https://c.example/\nAn assistant." in system[0]["content"]


@pytest.mark.parametrize(
    ("decision", "designator_upstream"),
    [
        ("direct", None),
        ("banana", None),  # no decision at all
        ("scrape: not a url", None),
        (None, "fake-error-500"),  # the designator fails
    ],
    ids=["direct", "nonsense", "no-url", "designator-error"],
)
def test_a_direct_or_unusable_decision_forwards_the_prompt_as_it_came(
    gateway: LiveGateway,
    key: IssuedKey,
    fake_upstream: FakeUpstream,
    django_db_blocker: Any,
    decision: str | None,
    designator_upstream: str | None,
) -> None:
    with django_db_blocker.unblock():
        s = make_augmentor(designator_upstream=designator_upstream)
    if decision is not None:
        fake_upstream.scripted[s.designator_upstream] = decision
    wait_served(gateway, key, s.name)
    marker = uuid.uuid4().hex

    answer = post(gateway, key, chat(s, f"plain question {marker}"))

    assert (answer.status, answer.headers[AUGMENTED]) == (200, "direct")
    [sent] = [b for b in seen(fake_upstream, s.target_upstream) if marker in json.dumps(b)]
    assert sent["messages"] == [{"role": "user", "content": f"plain question {marker}"}]


def test_a_search_provider_that_fails_degrades_to_direct_never_an_error(
    gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream, web: FakeWeb, augmentor: Callable[..., Setup]
) -> None:
    s = augmentor("search: the weather")
    web.searxng_status = 500
    try:
        answer = post(gateway, key, chat(s, "weather?"))
    finally:
        web.searxng_status = 200

    assert (answer.status, answer.headers[AUGMENTED]) == (200, "direct")
    assert seen(fake_upstream, s.target_upstream)[0]["messages"] == [{"role": "user", "content": "weather?"}]


def test_a_page_that_cannot_be_scraped_is_left_out_and_the_others_are_used(
    gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream, web: FakeWeb, augmentor: Callable[..., Setup]
) -> None:
    good = web.page(f"good-{uuid.uuid4().hex[:6]}", "<p>Readable words.</p>")
    s = augmentor(f"scrape: {web.url}/page/missing, ftp://files.example/x, {good}")

    answer = post(gateway, key, chat(s, "read these"))

    assert (answer.status, answer.headers[AUGMENTED]) == (200, "scrape")
    context = seen(fake_upstream, s.target_upstream)[0]["messages"][0]["content"]
    assert "Readable words." in context and "missing" not in context


def test_the_searches_and_scrapes_appear_in_the_requests_trace(
    gateway: LiveGateway,
    issue_key: Callable[..., IssuedKey],
    web: FakeWeb,
    trace_dir: Path,
    augmentor: Callable[..., Setup],
) -> None:
    traced = issue_key(trace_sample_rate=Decimal(1))
    url = web.page(f"traced-{uuid.uuid4().hex[:6]}", "<p>Traced page.</p>")
    s = augmentor("search+scrape: traced query", max_scrape_urls=1)
    web.results = [{"title": "Traced", "url": url, "content": "snippet"}]

    answer = post(gateway, traced, chat(s, "trace me"))

    request_id = answer.headers["x-request-id"]
    record = wait_trace(trace_dir, request_id)
    steps = record["augmentation"]
    assert steps[0] == {"step": "designator", "decision": "search+scrape", "query": "traced query", "urls": []}
    assert steps[1] == {"step": "search", "provider": "searxng", "query": "traced query", "results": 1}
    assert steps[2] == {"step": "scrape", "url": url, "final_url": url, "chars": len("Traced page.")}
    assert steps[3]["step"] == "context" and "Traced page." in steps[3]["text"]
    assert record["request"]["messages"] == [{"role": "user", "content": "trace me"}]  # as the client sent it


def test_with_the_db_sink_the_searches_and_scrapes_are_stored_in_the_requests_trace_row(
    gateway_config: None,
    issue_key: Callable[..., IssuedKey],
    fake_upstream: FakeUpstream,
    web: FakeWeb,
    django_db_blocker: Any,
) -> None:
    from accounts.models import RequestTrace

    db_sink = LiveGateway(env=augmenting_env(web, TRACE_SINK="db")).start()
    try:
        traced = issue_key(trace_sample_rate=Decimal(1))
        url = web.page(f"stored-{uuid.uuid4().hex[:6]}", "<p>Stored page.</p>")
        with django_db_blocker.unblock():
            s = make_augmentor()
        fake_upstream.scripted[s.designator_upstream] = f"scrape: {url}"
        wait_served(db_sink, traced, s.name)

        answer = post(db_sink, traced, chat(s, f"read {url}"))

        assert (answer.status, answer.headers[AUGMENTED]) == (200, "scrape")
        request_id = answer.headers["x-request-id"]
        [row] = wait_until(
            lambda: stored(django_db_blocker, RequestTrace, request_id), 10, f"no trace row for {request_id}"
        )
    finally:
        db_sink.terminate()
    assert [step["step"] for step in row.augmentation] == ["designator", "scrape", "context"]
    assert row.augmentation[1] == {"step": "scrape", "url": url, "final_url": url, "chars": len("Stored page.")}
    assert "Stored page." in row.augmentation[2]["text"]
    assert row.request["messages"] == [{"role": "user", "content": f"read {url}"}]  # as the client sent it


def stored(blocker: Any, model: Any, request_id: str) -> list[Any]:
    with blocker.unblock():
        return list(model.objects.filter(request_id=request_id))


def wait_trace(folder: Path, request_id: str, timeout: float = 10.0) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        for path in folder.glob("traces-*.jsonl"):
            for line in path.read_text().splitlines():
                record: dict[str, Any] = json.loads(line)
                if record["request_id"] == request_id:
                    return record
        return None

    record: dict[str, Any] = wait_until(found, timeout, f"no trace of {request_id}")
    return record


def test_the_designator_sees_the_query_only_as_the_input_guardrails_let_it_through(
    gateway: LiveGateway,
    key: IssuedKey,
    fake_upstream: FakeUpstream,
    django_db_blocker: Any,
    augmentor: Callable[..., Setup],
) -> None:
    from accounts.models import ApiKey
    from proxy.guardrails.services import guardrail_upsert

    s = augmentor("direct")
    with django_db_blocker.unblock():
        rail = guardrail_upsert(name=f"r-{uuid.uuid4().hex[:10]}", kind="pii", action="redact", stage="input")[0]
        ApiKey.objects.get(pk=key.key_id).guardrails.add(rail)
    deadline = time.monotonic() + 10
    while "[REDACTED:EMAIL]" not in json.dumps(seen(fake_upstream, s.target_upstream)):
        assert time.monotonic() < deadline, "the guardrail never applied"
        post(gateway, key, chat(s, "warm-up: write to jane@example.com"))
    marker = uuid.uuid4().hex

    assert post(gateway, key, chat(s, f"{marker}: mail jane@example.com")).status == 200

    asked = [json.dumps(b) for b in seen(fake_upstream, s.designator_upstream) if marker in json.dumps(b)]
    assert len(asked) == 1 and "jane@example.com" not in asked[0] and "[REDACTED:EMAIL]" in asked[0]


@pytest.fixture
def key_guardrail(django_db_blocker: Any) -> Iterator[Callable[[IssuedKey, str, str], None]]:
    """Attach an input guardrail (kind, action) to a key; removed after the
    test (other modules list every guardrail)."""
    from accounts.models import ApiKey
    from proxy.guardrails.services import guardrail_upsert

    rails = []

    def attach(key: IssuedKey, kind: str, action: str) -> None:
        with django_db_blocker.unblock():
            rail = guardrail_upsert(name=f"r-{uuid.uuid4().hex[:10]}", kind=kind, action=action, stage="input")[0]
            ApiKey.objects.get(pk=key.key_id).guardrails.add(rail)
        rails.append(rail)

    yield attach
    with django_db_blocker.unblock():
        for rail in rails:
            rail.delete()


def test_an_email_found_on_a_scraped_page_is_redacted_by_the_input_guardrails_before_the_target_sees_it(
    gateway: LiveGateway,
    key: IssuedKey,
    fake_upstream: FakeUpstream,
    web: FakeWeb,
    augmentor: Callable[..., Setup],
    key_guardrail: Callable[[IssuedKey, str, str], None],
) -> None:
    url = web.page(f"contact-{uuid.uuid4().hex[:6]}", "<p>Write to ops@example.org for access.</p>")
    s = augmentor(f"scrape: {url}")
    key_guardrail(key, "pii", "redact")
    deadline = time.monotonic() + 10
    while "[REDACTED:EMAIL]" not in json.dumps(seen(fake_upstream, s.target_upstream)):
        assert time.monotonic() < deadline, "the guardrail never applied"
        post(gateway, key, chat(s, f"warm-up: {url} or jane@example.com"))
    marker = uuid.uuid4().hex

    answer = post(gateway, key, chat(s, f"{marker}: who gives access? {url}"))

    assert (answer.status, answer.headers[AUGMENTED]) == (200, "scrape")
    [sent] = [b for b in seen(fake_upstream, s.target_upstream) if marker in json.dumps(b)]
    context = sent["messages"][0]["content"]
    assert "Write to [REDACTED:EMAIL] for access." in context
    assert "ops@example.org" not in json.dumps(sent)


def test_a_secret_found_on_a_page_that_a_block_guardrail_matches_is_dropped_and_the_request_answered_directly(
    gateway: LiveGateway,
    issue_key: Callable[..., IssuedKey],
    fake_upstream: FakeUpstream,
    web: FakeWeb,
    trace_dir: Path,
    augmentor: Callable[..., Setup],
    key_guardrail: Callable[[IssuedKey, str, str], None],
) -> None:
    traced = issue_key(trace_sample_rate=Decimal(1))
    url = web.page(f"leak-{uuid.uuid4().hex[:6]}", "<p>Deploy with AKIAIOSFODNN7EXAMPLE as the key.</p>")
    s = augmentor(f"scrape: {url}")
    key_guardrail(traced, "secrets", "block")
    deadline = time.monotonic() + 10
    while post(gateway, traced, chat(s, "warm-up: AKIAIOSFODNN7EXAMPLE")).status != 400:  # the client's own: refused
        assert time.monotonic() < deadline, "the guardrail never applied"
    marker = uuid.uuid4().hex

    answer = post(gateway, traced, chat(s, f"{marker}: how do I deploy? {url}"))

    assert (answer.status, answer.headers[AUGMENTED]) == (200, "direct")
    [sent] = [b for b in seen(fake_upstream, s.target_upstream) if marker in json.dumps(b)]
    assert sent["messages"] == [{"role": "user", "content": f"{marker}: how do I deploy? {url}"}]
    steps = wait_trace(trace_dir, answer.headers["x-request-id"])["augmentation"]
    dropped = [step for step in steps if step["step"] == "guardrails"]
    assert [(d["kind"], d["dropped"] > 0) for d in dropped] == [("secrets", True)]
    assert steps[-1] == {"step": "context", "added": 0}
    assert "AKIAIOSFODNN7EXAMPLE" not in json.dumps(steps)


def test_a_key_needs_the_augmentors_name_but_not_its_designator_or_target(
    gateway: LiveGateway, issue_key: Callable[..., IssuedKey], augmentor: Callable[..., Setup]
) -> None:
    s = augmentor("direct")
    allowed = issue_key(allowed_models=[s.name])
    assert post(gateway, allowed, chat(s, "hi")).status == 200
    refused = post(gateway, issue_key(allowed_models=[s.target]), chat(s, "hi"))
    assert (refused.status, refused.json()["error"]["code"]) == (403, "model_not_allowed")


# --- The resolution order ------------------------------------------------------


def test_an_augmentor_is_asked_before_a_wildcard_route_matching_its_name(
    gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream, web: FakeWeb, augmentor: Callable[..., Setup]
) -> None:
    name = f"fake/researcher-{uuid.uuid4().hex[:8]}"  # the session's `fake/*` route matches it too
    s = augmentor("search: wildcard", name=name)
    web.results = [{"title": "W", "url": "https://w.example/", "content": "w"}]

    answer = post(gateway, key, chat(s, "hi"))

    assert (answer.status, answer.headers[AUGMENTED]) == (200, "search")
    assert seen(fake_upstream, s.target_upstream) and not seen(fake_upstream, name.removeprefix("fake/"))


def test_a_smart_router_of_the_same_name_is_asked_before_the_augmentor(
    gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream, django_db_blocker: Any
) -> None:
    from proxy.models import Router

    with django_db_blocker.unblock():
        s = make_augmentor()
        # The commands refuse a second name; the table alone does not.
        Router.objects.create(name=s.name, designator=s.designator, candidates=[s.target])
    wait_served(gateway, key, s.name)

    def routed() -> Answer | None:
        answer = post(gateway, key, chat(s, "hi"))
        return answer if "x-gateway-routed-to" in answer.headers else None

    answer = wait_until(routed, 10, "the router never loaded")

    assert answer.headers["x-gateway-routed-to"] == s.target and AUGMENTED not in answer.headers


def test_a_smart_router_may_choose_an_augmentor_which_then_augments(
    gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream, web: FakeWeb, django_db_blocker: Any
) -> None:
    from proxy.models import Provider
    from proxy.router_services import router_upsert
    from proxy.services import route_upsert

    with django_db_blocker.unblock():
        s = make_augmentor(purpose="Questions about the news.")
        tag = uuid.uuid4().hex[:8]
        judge, other, router = f"judge-{tag}", f"other-{tag}", f"auto-{tag}"
        for name in (judge, other):
            route_upsert(model=name, provider=Provider.objects.get(name="fake"), upstream_model=f"up-{name}")
        router_upsert(name=router, designator=judge, candidates=[other, s.name])
    fake_upstream.scripted[f"up-{judge}"] = json.dumps({"model": s.name})
    fake_upstream.scripted[s.designator_upstream] = "search: the news"
    web.results = [{"title": "News", "url": "https://news.example/", "content": "Something happened."}]
    wait_served(gateway, key, router)

    answer = post(gateway, key, {**chat(s, "What happened today?"), "model": router})

    assert (answer.status, answer.headers["x-gateway-routed-to"], answer.headers[AUGMENTED]) == (200, s.name, "search")
    [picked] = seen(fake_upstream, f"up-{judge}")
    assert f"- {s.name}: Questions about the news." in picked["messages"][0]["content"]
    context = seen(fake_upstream, s.target_upstream)[0]["messages"][0]["content"]
    assert "[1] News\nURL: https://news.example/\nSomething happened." in context


def test_an_exact_cache_hit_is_served_before_the_augmentor_asks_anything(
    gateway: LiveGateway,
    issue_key: Callable[..., IssuedKey],
    fake_upstream: FakeUpstream,
    web: FakeWeb,
    augmentor: Callable[..., Setup],
) -> None:
    caching = issue_key(cache_ttl_seconds=600)
    marker = uuid.uuid4().hex
    s = augmentor(f"search: {marker}")
    web.results = [{"title": "C", "url": "https://c.example/", "content": "cached context"}]

    first = post(gateway, caching, chat(s, "same question"))
    second = post(gateway, caching, chat(s, "same question"))

    assert (first.headers["x-cache"], first.headers[AUGMENTED]) == ("miss", "search")
    assert second.headers["x-cache"] == "hit" and AUGMENTED not in second.headers
    assert second.json()["choices"] == first.json()["choices"]
    assert len(seen(fake_upstream, s.designator_upstream)) == 1
    assert len([r for r in web.seen("/search") if marker in r.query.get("q", "")]) == 1


# --- In-process: the timeout, a spent budget, and no database query once warm ----------


@pytest.fixture
async def in_process(gateway_config: None, monkeypatch: Any, settings: Any, web: FakeWeb) -> Any:
    monkeypatch.setattr(lifecycle, "GATEWAY_BACKGROUND", False)  # no writer, no poller
    settings.AUGMENT_SEARXNG_URL = web.url
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


async def test_a_designator_slower_than_the_timeout_lets_the_target_answer_directly(
    in_process: None, key: IssuedKey, django_db_blocker: Any, settings: Any
) -> None:
    settings.AUGMENT_DESIGNATOR_TIMEOUT_SECONDS = 0.3
    s = await committed(django_db_blocker, lambda: make_augmentor(designator_upstream="fake-slowheaders-5"))
    with django_db_blocker.unblock():
        started = time.monotonic()
        answer = await call(key, chat(s, "hurry"))
        waited = time.monotonic() - started
    assert (answer.status, answer.headers[AUGMENTED]) == (200, "direct")
    assert waited < 3  # the target answered long before the designator would have
    events = meter.take(meter.pending)
    assert sorted((e.purpose, e.public_model) for e in events) == [("", s.target), ("augmentation", s.designator)]
    assert {e.key_id for e in events} == {key.key_id}


async def test_a_warm_augmented_request_makes_no_database_query(
    in_process: None, key: IssuedKey, fake_upstream: FakeUpstream, web: FakeWeb, django_db_blocker: Any
) -> None:
    s = await committed(django_db_blocker, make_augmentor)
    fake_upstream.scripted[s.designator_upstream] = "search: warm"
    web.results = [{"title": "Warm", "url": "https://warm.example/", "content": "warm context"}]
    with django_db_blocker.unblock():  # loads the key and the catalog
        assert (await call(key, chat(s, "warm up"))).status == 200
    meter.take(meter.pending)

    answer = await call(key, chat(s, "now the database is blocked"))  # pytest-django refuses any query here

    assert (answer.status, answer.headers[AUGMENTED]) == (200, "search")
    assert sorted(e.purpose for e in meter.take(meter.pending)) == ["", "augmentation"]


def test_a_spent_budget_refuses_before_anything_goes_upstream(
    gateway: LiveGateway,
    key: IssuedKey,
    fake_upstream: FakeUpstream,
    web: FakeWeb,
    ledger: Ledger,
    django_db_blocker: Any,
) -> None:
    from accounts.models import ApiKey
    from billing.services import budget_set, price_set

    with django_db_blocker.unblock():  # before the gateway first sees the key (and its budgets)
        budget_set(limit_usd=Decimal("0.000001"), period="day", api_key=ApiKey.objects.get(pk=key.key_id))
        s = make_augmentor()
        for upstream in (s.designator_upstream, s.target_upstream):
            price_set(model=upstream, input_usd=Decimal("1"), output_usd=Decimal("1"))
    fake_upstream.scripted[s.designator_upstream] = "search: anything"
    wait_served(gateway, key, s.name)
    searched = len(web.seen("/search"))

    answer = post(gateway, key, chat(s, "anything"))

    assert (answer.status, answer.json()["error"]["code"]) == (429, "budget_exceeded")
    assert not seen(fake_upstream, s.designator_upstream) and not seen(fake_upstream, s.target_upstream)
    assert len(web.seen("/search")) == searched and ledger.wait(key.key_id, 0) == []


# --- Pure parts ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("direct", Decision("direct")),
        ("DIRECT\n", Decision("direct")),
        ("search: rust async runtimes", Decision("search", query="rust async runtimes")),
        ("`search+scrape:best pizza`", Decision("search+scrape", query="best pizza")),
        (
            '"scrape: https://a.example/x, http://b.example/y"',
            Decision("scrape", urls=("https://a.example/x", "http://b.example/y")),
        ),
        (
            "scrape: https://a.example/1 https://a.example/2 https://a.example/3",
            Decision("scrape", urls=("https://a.example/1", "https://a.example/2")),
        ),
        ("```\nsearch: fenced\n```", Decision("search", query="fenced")),
        ("search:", None),
        ("scrape: file:///etc/passwd", None),
        ("direct: but why", None),
        ("I think you should search the web", None),
        ("", None),
    ],
)
def test_a_designators_answer_is_read_as_one_decision(text: str, expected: Decision | None) -> None:
    assert decision_parse(text, max_urls=2) == expected


def test_the_context_lists_results_then_pages_and_is_cut_at_a_character() -> None:
    results = [SearchResult("Title", "https://t.example/", "Snippet"), SearchResult("Perplexity", "", "An answer")]
    pages = [Page("https://p.example/", "Page title", "Body text")]
    block, cut = context_block(Decision("search", query="q"), results, pages, 10_000)
    assert not cut
    assert block.split("\n\n")[1:] == [
        "[1] Title\nURL: https://t.example/\nSnippet",
        "[2] Perplexity\nAn answer",
        "Page https://p.example/ (Page title):\nBody text",
    ]
    for cap in (250, 251):  # é is two bytes: one of these cuts inside one
        short, cut = context_block(Decision("scrape"), [], [Page("u", "", "é" * 100)], cap)
        assert cut and len(short.encode()) in (cap - 1, cap) and short.endswith("é") and "\ufffd" not in short
    assert context_block(Decision("search", query="q"), [], [], 100) == ("", False)


@pytest.mark.parametrize(
    ("dialect", "body", "expected"),
    [
        (
            Dialect.CHAT,
            {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]},
            {
                "messages": [
                    {"role": "system", "content": "S"},
                    {"role": "system", "content": "C"},
                    {"role": "user", "content": "Q"},
                ]
            },
        ),
        (Dialect.MESSAGES, {"messages": []}, {"messages": [], "system": "C"}),
        (
            Dialect.MESSAGES,
            {"system": [{"type": "text", "text": "S"}]},
            {"system": [{"type": "text", "text": "S"}, {"type": "text", "text": "C"}]},
        ),
        (Dialect.RESPONSES, {"input": "Q", "instructions": "I"}, {"input": "Q", "instructions": "I\n\nC"}),
        (Dialect.COMPLETIONS, {"prompt": "Q"}, {"prompt": "C\n\nQ"}),
        (Dialect.COMPLETIONS, {"prompt": ["Q"]}, None),
    ],
    ids=["chat", "messages", "messages-blocks", "responses", "completions", "completions-list"],
)
def test_the_context_goes_where_each_api_keeps_instructions(
    dialect: Dialect, body: dict[str, Any], expected: dict[str, Any] | None
) -> None:
    call = ClientCall(dialect, {"model": "m", **body}, 10, False)
    augmented = augmented_body(call, "C")
    assert augmented == (None if expected is None else {"model": "m", **expected})


# --- Commands, gateway_apply and the admin ----------------------------------------


@pytest.fixture
def routes(db: None) -> tuple[str, str]:
    from proxy.services import provider_upsert, route_upsert

    provider, _ = provider_upsert(name="p", kind="openai", base_url="https://p.test/v1")
    route_upsert(model="judge", provider=provider)
    route_upsert(model="writer", provider=provider)
    return "judge", "writer"


def test_augmentor_create_saves_an_augmentor_and_delete_removes_it(routes: tuple[str, str]) -> None:
    from proxy.models import Augmentor

    out = StringIO()
    call_command(
        "augmentor_create",
        "researcher",
        "--designator=judge",
        "--target=writer",
        "--search-provider=perplexity",
        "--max-search-results=3",
        "--max-scrape-urls=2",
        "--max-context-tokens=900",
        "--purpose=fresh facts",
        stdout=out,
    )
    row = Augmentor.objects.get(name="researcher")
    assert (row.designator, row.target, row.search_provider, row.purpose) == (
        "judge",
        "writer",
        "perplexity",
        "fresh facts",
    )
    assert (row.max_search_results, row.max_scrape_urls, row.max_context_tokens) == (3, 2, 900)
    assert "saved augmentor researcher" in out.getvalue()
    call_command("augmentor_create", "researcher", "--delete", stdout=out)
    assert not Augmentor.objects.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--designator=judge", "--target=nowhere"], "is not a model the gateway routes"),
        (["--designator=judge"], "--target MODEL are required"),
        (["--designator=judge", "--target=writer", "--max-context-tokens=0"], "max_context_tokens"),
    ],
)
def test_augmentor_create_refuses_what_could_not_work(routes: tuple[str, str], args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        call_command("augmentor_create", "researcher", *args, stdout=StringIO())


def test_an_augmentor_may_not_take_a_routes_name_or_chain_to_a_router(routes: tuple[str, str]) -> None:
    from proxy.models import Router

    with pytest.raises(CommandError, match="a route, alias or router of that name exists"):
        call_command("augmentor_create", "writer", "--designator=judge", "--target=writer", stdout=StringIO())
    Router.objects.create(name="auto", designator="judge", candidates=["writer"])
    with pytest.raises(CommandError, match="is a router or augmentor"):
        call_command("augmentor_create", "researcher", "--designator=judge", "--target=auto", stdout=StringIO())


def test_gateway_apply_sets_the_files_augmentors_and_removes_the_others(routes: tuple[str, str]) -> None:
    from proxy.apply import config_apply
    from proxy.models import Augmentor

    entry = {"name": "researcher", "designator": "judge", "target": "writer", "max_context_tokens": 500}
    assert config_apply({"augmentors": [entry, {**entry, "name": "scout"}]})["augmentor saved"] == 2
    assert config_apply({"augmentors": [entry]}) == {"augmentor removed": 1, "augmentor unchanged": 1}
    row = Augmentor.objects.get()
    assert (row.name, row.search_provider, row.max_context_tokens) == ("researcher", "searxng", 500)
    assert config_apply({"routes": []}) == {}  # no augmentors: section, nothing removed
    assert Augmentor.objects.count() == 1


def test_the_admin_refuses_an_augmentor_whose_target_is_not_routed(routes: tuple[str, str], admin_client: Any) -> None:
    form = {
        "name": "researcher",
        "designator": "judge",
        "target": "nowhere",
        "search_provider": "searxng",
        "max_search_results": 5,
        "max_scrape_urls": 3,
        "max_context_tokens": 2000,
        "purpose": "",
        "is_active": "on",
    }
    refused = admin_client.post("/admin/proxy/augmentor/add/", form)
    assert refused.status_code == 200 and b"is not a model the gateway routes" in refused.content
    saved = admin_client.post("/admin/proxy/augmentor/add/", {**form, "target": "writer"})
    assert saved.status_code == 302
    assert admin_client.get("/admin/proxy/augmentor/").status_code == 200


def test_a_route_alias_or_router_may_not_take_an_augmentors_name(routes: tuple[str, str]) -> None:
    from proxy.augmentor_services import AugmentorSpec, augmentor_upsert
    from proxy.models import Provider
    from proxy.router_services import router_upsert
    from proxy.services import alias_upsert, route_upsert

    augmentor_upsert(AugmentorSpec(name="researcher", designator="judge", target="writer"))
    with pytest.raises(ValueError, match="an augmentor of that name exists"):
        route_upsert(model="researcher", provider=Provider.objects.get(name="p"))
    with pytest.raises(ValueError, match="an augmentor of that name exists"):
        alias_upsert(pattern="researcher", target="writer")
    with pytest.raises(ValueError, match="an augmentor of that name exists"):
        router_upsert(name="researcher", designator="judge", candidates=["writer"])
