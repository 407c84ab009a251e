"""The semantic cache through the gateway under daphne, with a fake embeddings upstream.

Each test has a tenant of its own (whose entries no other test sees) and
puts a marker in the system prompt, which the semantic cache matches
exactly, so the fake chat upstream's requests can be counted per test. On
the PostgreSQL + Redis run the answers live in Redis and the vectors in
PostgreSQL; the assertions are the same.
"""

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from cachestore.tests.conftest import EMBED_UPSTREAM, Embedder
from cachestore.tests.fake_embeddings import similarity
from conftest import IssuedKey, Ledger, unique_marker, wait_until
from proxy.tests.fake_upstream import FakeUpstream
from proxy.tests.live import LiveGateway

pytestmark = pytest.mark.usefixtures("live_gateway")

FRANCE = "what is the capital of France?"
FRANCE_AGAIN = "what's the capital of France"
BREAD = "how long should sourdough bread proof"


@pytest.fixture(scope="module")
def embedder(embedding_routes: Embedder, django_db_blocker: Any, live_gateway: LiveGateway) -> Embedder:
    """The embeddings routes, once the gateway under test serves them."""
    from accounts.services import api_key_issue, tenant_create

    with django_db_blocker.unblock():
        probe, _ = api_key_issue(tenant=tenant_create(slug=f"probe-{uuid.uuid4().hex[:10]}"))
    wait_served(live_gateway, probe, embedding_routes.route)
    return embedding_routes


def wait_served(gateway: LiveGateway, key: str, model: str, timeout: float = 10.0) -> None:
    """Until the gateway's catalog has the route (it reloads on a config change)."""
    request = urllib.request.Request(f"{gateway.url}/v1/models/{model}", headers={"Authorization": f"Bearer {key}"})

    def served() -> bool:
        try:
            with urllib.request.urlopen(request, timeout=5):
                return True
        except urllib.error.HTTPError:
            return False

    wait_until(served, timeout, f"the gateway never served {model}")


@pytest.fixture
def semantic_key(
    issue_key: Callable[..., IssuedKey], django_db_blocker: Any, embedder: Embedder
) -> Callable[..., IssuedKey]:
    """A key with a cache lifetime and a semantic threshold; its tenant embeds with the test route."""
    from accounts.models import Tenant

    def issue(embedding_model: str | None = None, **options: Any) -> IssuedKey:
        options.setdefault("cache_ttl_seconds", 600)
        options.setdefault("semantic_threshold", Decimal("0.9"))
        issued = issue_key(**options)
        with django_db_blocker.unblock():
            Tenant.objects.filter(pk=issued.tenant_id).update(
                semantic_embedding_model=embedder.route if embedding_model is None else embedding_model
            )
        return issued

    return issue


def chat(
    gateway: LiveGateway,
    key: IssuedKey,
    question: str,
    marker: str,
    *,
    stream: bool = False,
    model: str = "gpt-test",
    headers: dict[str, str] | None = None,
    **params: Any,
) -> tuple[int, dict[str, str], bytes]:
    body = {
        "model": model,
        "stream": stream,
        "messages": [{"role": "system", "content": f"Answer briefly. {marker}"}, {"role": "user", "content": question}],
        **params,
    }
    request = urllib.request.Request(
        gateway.url + "/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **key.headers, **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def upstream_calls(fake: FakeUpstream, marker: str) -> int:
    return sum(marker in str(r.body.get("messages")) for r in fake.requests)


def vectors_stored(blocker: Any, tenant_id: int, count: int, timeout: float = 10.0) -> None:
    """Until the tenant has `count` vectors in the database (they are written after the answer)."""
    from cachestore.models import SemanticVector

    def found() -> int:
        with blocker.unblock():
            return SemanticVector.objects.filter(tenant_id=tenant_id).count()

    wait_until(lambda: found() >= count, timeout, lambda: f"{found()} vectors stored, not {count}")
    assert found() == count


def test_a_question_worded_differently_is_answered_from_the_semantic_cache(
    live_gateway: LiveGateway,
    semantic_key: Callable[..., IssuedKey],
    fake_upstream: FakeUpstream,
    embedder: Embedder,
    django_db_blocker: Any,
) -> None:
    key, marker = semantic_key(), unique_marker()
    first = chat(live_gateway, key, FRANCE, marker)
    vectors_stored(django_db_blocker, key.tenant_id, 1)
    second = chat(live_gateway, key, FRANCE_AGAIN, marker)
    assert (first[0], first[1]["x-cache"], second[0], second[1]["x-cache"]) == (200, "miss", 200, "hit")
    assert second[1]["x-cache-match"] == "semantic"
    assert second[1]["x-cache-similarity"] == f"{similarity(FRANCE, FRANCE_AGAIN):.3f}" == "0.962"
    assert second[2] == first[2]  # the same bytes
    assert upstream_calls(fake_upstream, marker) == 1
    assert embedder.fake.inputs(EMBED_UPSTREAM)[-2:] == [FRANCE, FRANCE_AGAIN]  # the question alone


def test_each_embedding_leaves_a_usage_row_billed_to_the_key_and_the_hit_is_billed_at_zero(
    live_gateway: LiveGateway,
    semantic_key: Callable[..., IssuedKey],
    embedder: Embedder,
    ledger: Ledger,
    django_db_blocker: Any,
) -> None:
    key, marker = semantic_key(), unique_marker()
    chat(live_gateway, key, FRANCE, marker)
    vectors_stored(django_db_blocker, key.tenant_id, 1)
    chat(live_gateway, key, FRANCE_AGAIN, marker)
    rows = ledger.wait(key.key_id, 4)
    embeddings = [r for r in rows if r.purpose == "semantic_cache"]
    answers = [r for r in rows if r.purpose == ""]
    assert [(r.public_model, r.endpoint, r.status_code) for r in embeddings] == [
        (embedder.route, "embeddings", 200)
    ] * 2
    assert all(r.cost_nanos > 0 and r.input_tokens > 0 for r in embeddings)  # priced, and billed to the same key
    miss, hit = sorted(answers, key=lambda r: r.cache_hit)
    assert (miss.cache_status, miss.cost_nanos > 0) == ("miss", True)
    assert (hit.cache_status, hit.cache_hit, hit.cost_nanos, hit.saved_nanos) == ("hit", True, 0, miss.cost_nanos)


def test_an_unrelated_question_misses_and_an_identical_one_is_an_exact_hit(
    live_gateway: LiveGateway,
    semantic_key: Callable[..., IssuedKey],
    fake_upstream: FakeUpstream,
    django_db_blocker: Any,
) -> None:
    key, marker = semantic_key(), unique_marker()
    chat(live_gateway, key, FRANCE, marker)
    vectors_stored(django_db_blocker, key.tenant_id, 1)
    unrelated = chat(live_gateway, key, BREAD, marker)
    exact = chat(live_gateway, key, FRANCE, marker)
    assert unrelated[1]["x-cache"] == "miss" and "x-cache-match" not in unrelated[1]
    assert (exact[1]["x-cache"], exact[1]["x-cache-match"]) == ("hit", "exact")
    assert "x-cache-similarity" not in exact[1]
    assert upstream_calls(fake_upstream, marker) == 2


def test_another_tenants_answers_are_never_candidates(
    live_gateway: LiveGateway,
    semantic_key: Callable[..., IssuedKey],
    fake_upstream: FakeUpstream,
    django_db_blocker: Any,
) -> None:
    one, other, marker = semantic_key(), semantic_key(), unique_marker()
    chat(live_gateway, one, FRANCE, marker)
    vectors_stored(django_db_blocker, one.tenant_id, 1)
    same = chat(live_gateway, other, FRANCE, marker)  # the very same request, same model and embeddings
    near = chat(live_gateway, other, FRANCE_AGAIN, marker + " ")
    assert (same[1]["x-cache"], near[1]["x-cache"]) == ("miss", "miss")
    assert upstream_calls(fake_upstream, marker) == 3


def test_other_request_parameters_or_another_system_prompt_are_never_candidates(
    live_gateway: LiveGateway,
    semantic_key: Callable[..., IssuedKey],
    fake_upstream: FakeUpstream,
    django_db_blocker: Any,
) -> None:
    key, marker = semantic_key(), unique_marker()
    chat(live_gateway, key, FRANCE, marker, temperature=0)
    vectors_stored(django_db_blocker, key.tenant_id, 1)
    assert chat(live_gateway, key, FRANCE_AGAIN, marker, temperature=1)[1]["x-cache"] == "miss"
    assert chat(live_gateway, key, FRANCE_AGAIN, marker + "!", temperature=0)[1]["x-cache"] == "miss"
    assert chat(live_gateway, key, FRANCE_AGAIN, marker, temperature=0)[1]["x-cache-match"] == "semantic"


def test_a_streamed_answer_is_replayed_as_a_stream_to_a_similar_question(
    live_gateway: LiveGateway,
    semantic_key: Callable[..., IssuedKey],
    fake_upstream: FakeUpstream,
    django_db_blocker: Any,
) -> None:
    key, marker = semantic_key(), unique_marker()
    streamed = chat(live_gateway, key, FRANCE, marker, stream=True)
    vectors_stored(django_db_blocker, key.tenant_id, 1)
    again = chat(live_gateway, key, FRANCE_AGAIN, marker, stream=True)
    assert (again[1]["x-cache"], again[1]["x-cache-match"]) == ("hit", "semantic")
    assert again[1]["content-type"].startswith("text/event-stream")
    assert again[2] == streamed[2]
    assert upstream_calls(fake_upstream, marker) == 1


@pytest.mark.parametrize(
    "options",
    [
        {"semantic_threshold": Decimal("0.99")},  # 0.962 is not enough
        {"semantic_min_answer_tokens": 1000},  # the answer is too short to be offered
        {"semantic_max_answer_tokens": 3},  # or too long
        {"semantic_ttl_seconds": 0},  # offered to similar questions for no time at all
    ],
)
def test_a_similar_question_misses_when_the_keys_settings_say_so(
    live_gateway: LiveGateway,
    semantic_key: Callable[..., IssuedKey],
    fake_upstream: FakeUpstream,
    options: dict[str, Any],
) -> None:
    key, marker = semantic_key(**options), unique_marker()
    chat(live_gateway, key, FRANCE, marker)
    assert chat(live_gateway, key, FRANCE, marker)[1]["x-cache-match"] == "exact"  # stored, so indexed or not
    assert chat(live_gateway, key, FRANCE_AGAIN, marker)[1]["x-cache"] == "miss"
    assert upstream_calls(fake_upstream, marker) == 2


def test_the_whole_conversation_can_be_the_question(
    live_gateway: LiveGateway,
    semantic_key: Callable[..., IssuedKey],
    django_db_blocker: Any,
) -> None:
    key = semantic_key(semantic_scope="conversation")

    def conversation(opening: str, question: str) -> dict[str, Any]:
        turns = [{"role": "assistant", "content": opening}, {"role": "user", "content": question}]
        return {"model": "gpt-test", "messages": turns}

    geography = "Hello, ask me about geography."
    assert post(live_gateway, key, conversation(geography, FRANCE))[1]["x-cache"] == "miss"
    vectors_stored(django_db_blocker, key.tenant_id, 1)
    near = post(live_gateway, key, conversation(geography, FRANCE_AGAIN))
    far = post(live_gateway, key, conversation("Bonjour, baking and sourdough bread questions only!", FRANCE_AGAIN))
    assert (near[1]["x-cache"], far[1]["x-cache"]) == ("hit", "miss")


def post(gateway: LiveGateway, key: IssuedKey, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        gateway.url + "/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **key.headers},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()


def test_an_embedding_that_fails_leaves_the_request_a_plain_miss(
    live_gateway: LiveGateway,
    semantic_key: Callable[..., IssuedKey],
    embedder: Embedder,
    fake_upstream: FakeUpstream,
    ledger: Ledger,
) -> None:
    key, marker = semantic_key(embedding_model=embedder.failing), unique_marker()
    first, second = chat(live_gateway, key, FRANCE, marker), chat(live_gateway, key, FRANCE_AGAIN, marker)
    assert (first[0], first[1]["x-cache"], second[0], second[1]["x-cache"]) == (200, "miss", 200, "miss")
    assert upstream_calls(fake_upstream, marker) == 2
    rows = ledger.wait(key.key_id, 4)
    assert sorted((r.purpose, r.status_code) for r in rows) == [("", 200), ("", 200)] + [("semantic_cache", 500)] * 2


def test_a_key_without_a_threshold_never_embeds(
    live_gateway: LiveGateway,
    semantic_key: Callable[..., IssuedKey],
    issue_key: Callable[..., IssuedKey],
    embedder: Embedder,
) -> None:
    key, marker = issue_key(cache_ttl_seconds=600), unique_marker()
    before = len(embedder.fake.requests)
    chat(live_gateway, key, FRANCE, marker)
    assert chat(live_gateway, key, FRANCE_AGAIN, marker)[1]["x-cache"] == "miss"
    assert len(embedder.fake.requests) == before


def test_a_gateway_started_later_loads_the_vectors_stored_before(
    live_gateway: LiveGateway,
    semantic_key: Callable[..., IssuedKey],
    fake_upstream: FakeUpstream,
    django_db_blocker: Any,
) -> None:
    key, marker = semantic_key(), unique_marker()
    chat(live_gateway, key, FRANCE, marker)
    vectors_stored(django_db_blocker, key.tenant_id, 1)
    later = LiveGateway().start()
    try:
        near = chat(later, key, FRANCE_AGAIN, marker)
        found = (near[1].get("x-cache"), near[1].get("x-cache-match"))
        assert found == ("hit", "semantic"), f"{near}\n{later.log()[-3000:]}"
    finally:
        later.terminate()
    assert upstream_calls(fake_upstream, marker) == 1


# --- Where the semantic cache stands among the request's steps ------------------------


def test_a_smart_router_is_asked_first_and_the_semantic_cache_answers_for_the_candidate_it_chose(
    live_gateway: LiveGateway,
    semantic_key: Callable[..., IssuedKey],
    fake_upstream: FakeUpstream,
    django_db_blocker: Any,
) -> None:
    from proxy.tests.test_smart_routers import make_router, seen
    from proxy.tests.test_smart_routers import wait_served as router_served

    key, marker = semantic_key(), unique_marker()
    with django_db_blocker.unblock():
        s = make_router(fake_upstream)
    fake_upstream.scripted[s.designator_upstream] = json.dumps({"model": s.chatter})
    router_served(live_gateway, key, s.router)
    first = chat(live_gateway, key, FRANCE, marker, model=s.router)
    vectors_stored(django_db_blocker, key.tenant_id, 1)
    second = chat(live_gateway, key, FRANCE_AGAIN, marker, model=s.router)
    assert (first[1]["x-gateway-routed-to"], first[1]["x-cache"]) == (s.chatter, "miss")
    assert (second[1]["x-gateway-routed-to"], second[1]["x-cache-match"]) == (s.chatter, "semantic")
    assert len(seen(fake_upstream, s.designator_upstream)) == 2  # the router was asked both times, first
    assert len(seen(fake_upstream, s.upstream(s.chatter))) == 1


def test_an_alias_and_its_target_share_answers_the_cache_keys_on_the_resolved_model(
    live_gateway: LiveGateway,
    semantic_key: Callable[..., IssuedKey],
    fake_upstream: FakeUpstream,
    django_db_blocker: Any,
) -> None:
    from proxy.services import alias_upsert

    key, marker, alias = semantic_key(), unique_marker(), f"alias-{uuid.uuid4().hex[:8]}"
    with django_db_blocker.unblock():
        alias_upsert(pattern=alias, target="gpt-test")
    wait_served(live_gateway, key.plaintext, alias)
    assert chat(live_gateway, key, FRANCE, marker, model=alias)[1]["x-cache"] == "miss"
    vectors_stored(django_db_blocker, key.tenant_id, 1)
    assert chat(live_gateway, key, FRANCE_AGAIN, marker, model="gpt-test")[1]["x-cache-match"] == "semantic"
    assert upstream_calls(fake_upstream, marker) == 1


def test_the_embedding_sees_the_question_as_the_input_guardrails_redacted_it(
    live_gateway: LiveGateway,
    semantic_key: Callable[..., IssuedKey],
    embedder: Embedder,
    django_db_blocker: Any,
) -> None:
    from accounts.models import ApiKey
    from proxy.guardrails.services import guardrail_upsert

    key, marker = semantic_key(), unique_marker()
    with django_db_blocker.unblock():
        rail = guardrail_upsert(name=f"r-{uuid.uuid4().hex[:10]}", kind="pii", action="redact", stage="input")[0]
        ApiKey.objects.get(pk=key.key_id).guardrails.add(rail)

    def redacted_embedding() -> tuple[str, list[str]] | None:  # once the gateway's catalog has the guardrail
        question = f"{uuid.uuid4().hex} should I write to jane@example.com about France"
        chat(live_gateway, key, question, marker)
        embedded = [text for text in embedder.fake.inputs(EMBED_UPSTREAM) if question[:32] in text]
        return (question, embedded) if embedded and "jane@example.com" not in embedded[-1] else None

    question, embedded = wait_until(redacted_embedding, 10, "the guardrail never applied")
    assert embedded[-1].startswith(question[:32]) and "France" in embedded[-1]


def test_cache_warmup_indexes_the_questions_of_a_tenant_whose_semantic_cache_is_on(
    live_gateway: LiveGateway,
    semantic_key: Callable[..., IssuedKey],
    django_db_blocker: Any,
    tmp_path: Any,
) -> None:
    from io import StringIO

    from django.core.management import call_command

    from accounts.models import Tenant

    key, marker = semantic_key(), unique_marker()
    with django_db_blocker.unblock():
        Tenant.objects.filter(pk=key.tenant_id).update(semantic_threshold=Decimal("0.9"))  # the warmup key's too
        slug = Tenant.objects.get(pk=key.tenant_id).slug
    system = {"role": "system", "content": f"Answer briefly. {marker}"}
    path = tmp_path / "warm.jsonl"
    path.write_text(json.dumps({"model": "gpt-test", "messages": [system, {"role": "user", "content": FRANCE}]}))
    with django_db_blocker.unblock():
        call_command("cache_warmup", slug, "--file", str(path), "--cache-ttl", "600", stdout=StringIO())
    vectors_stored(django_db_blocker, key.tenant_id, 1)

    # The gateway is another process: it catches up with the vector within
    # CACHESTORE_SEMANTIC_SYNC_SECONDS. Asked meanwhile with no-store, so
    # that a miss leaves nothing of its own to be found instead.
    def hit() -> Any:
        near = chat(live_gateway, key, FRANCE_AGAIN, marker, headers={"Cache-Control": "no-store"})
        return near if near[1]["x-cache"] == "hit" else None

    near = wait_until(hit, 10, "the gateway never found the warmed question")
    assert (near[1]["x-cache-match"], near[1]["x-cache-similarity"]) == ("semantic", "0.962")


def test_the_openai_sdk_reads_a_semantic_hit_and_its_headers(
    live_gateway: LiveGateway,
    semantic_key: Callable[..., IssuedKey],
    django_db_blocker: Any,
) -> None:
    import openai

    key, marker = semantic_key(), unique_marker()
    client = openai.OpenAI(base_url=live_gateway.url + "/v1", api_key=key.plaintext, max_retries=0)

    def ask(question: str) -> Any:
        messages = [{"role": "system", "content": marker}, {"role": "user", "content": question}]
        return client.chat.completions.with_raw_response.create(model="gpt-test", messages=messages)

    first = ask(FRANCE)
    vectors_stored(django_db_blocker, key.tenant_id, 1)
    second = ask(FRANCE_AGAIN)
    assert (second.headers["x-cache-match"], second.headers["x-cache-similarity"]) == ("semantic", "0.962")
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content


def test_the_semantic_cache_answers_before_an_augmentor_asks_its_designator(
    live_gateway: LiveGateway,
    semantic_key: Callable[..., IssuedKey],
    fake_upstream: FakeUpstream,
    django_db_blocker: Any,
) -> None:
    from proxy.tests.test_augmentors import make_augmentor, seen
    from proxy.tests.test_augmentors import wait_served as augmentor_served

    key, marker = semantic_key(), unique_marker()
    with django_db_blocker.unblock():
        s = make_augmentor()
    fake_upstream.scripted[s.designator_upstream] = "direct"
    augmentor_served(live_gateway, key, s.name)
    first = chat(live_gateway, key, FRANCE, marker, model=s.name)
    vectors_stored(django_db_blocker, key.tenant_id, 1)
    second = chat(live_gateway, key, FRANCE_AGAIN, marker, model=s.name)
    assert (first[0], first[1]["x-cache"], second[1]["x-cache-match"]) == (200, "miss", "semantic")
    assert len(seen(fake_upstream, s.designator_upstream)) == 1  # asked for the first question only
    assert len(seen(fake_upstream, s.target_upstream)) == 1
