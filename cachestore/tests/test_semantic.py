"""The semantic cache in-process (no database query once warm, the setting, the
timeout), its index (partitions, expiry, catching up across processes), what
it compares, and the commands that turn it on."""

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal
from io import StringIO
from typing import Any

import numpy as np
import orjson
import pytest
from asgiref.sync import sync_to_async
from django.core.management import CommandError, call_command
from django.db import connection

from billing.meter import meter
from cachestore.flight import writes_settled
from cachestore.semantic_index import SemanticIndex, semantic_index_reset, unit_vector
from cachestore.semantic_keys import partition_key, question_text
from cachestore.tests.conftest import Embedder
from cachestore.tests.fake_embeddings import embedding
from conftest import IssuedKey
from gateway import lifecycle
from proxy.semantic import semantic_writes_settled
from proxy.tests.asgi import AsgiResponse, asgi_call
from proxy.upstream import upstream_sessions_close

FRANCE = "what is the capital of France?"
FRANCE_AGAIN = "what's the capital of France"


# --- In-process: no database query once warm, the setting, the timeout ----------------


@pytest.fixture
async def in_process(gateway_config: None, monkeypatch: Any) -> Any:
    monkeypatch.setattr(lifecycle, "GATEWAY_BACKGROUND", False)  # no writer, no poller
    semantic_index_reset()  # loaded anew, on this test's loop
    meter.take(meter.pending)
    yield
    meter.take(meter.pending)
    semantic_index_reset()
    await upstream_sessions_close()  # this test's loop ends with the test


@pytest.fixture
def semantic_key(issue_key: Callable[..., IssuedKey]) -> Callable[..., IssuedKey]:
    def issue(**options: Any) -> IssuedKey:
        return issue_key(cache_ttl_seconds=600, semantic_threshold=Decimal("0.9"), **options)

    return issue


async def ask(key: IssuedKey, question: str) -> AsgiResponse:
    from gateway.asgi import application

    body = {"model": "gpt-test", "messages": [{"role": "user", "content": question}]}
    return await asgi_call(application, "POST", "/v1/chat/completions", headers=key.headers, body=orjson.dumps(body))


async def settled() -> None:
    await writes_settled()  # the answer stored
    await semantic_writes_settled()  # and its question's vector


def committed(fn: Callable[[], Any]) -> Callable[[], Any]:
    """`fn`, then its thread's connection closed (it would outlive the test database)."""

    def run() -> Any:
        try:
            return fn()
        finally:
            connection.close()

    return run


async def test_a_warm_semantic_hit_makes_no_database_query_and_embeds_with_the_setting_model(
    in_process: None,
    semantic_key: Callable[..., IssuedKey],
    embedding_routes: Embedder,
    django_db_blocker: Any,
    settings: Any,
) -> None:
    settings.CACHESTORE_SEMANTIC_EMBEDDING_MODEL = embedding_routes.route  # the tenant names none
    settings.CACHESTORE_SEMANTIC_SYNC_SECONDS = 3600  # no catch-up during the test
    key = await sync_to_async(committed(semantic_key))()
    with django_db_blocker.unblock():  # loads the key, the catalog and the (empty) index
        assert (await ask(key, FRANCE)).headers["x-cache"] == "miss"
        await settled()
    meter.take(meter.pending)

    answer = await ask(key, FRANCE_AGAIN)  # pytest-django refuses any query here

    assert (answer.status, answer.headers["x-cache"], answer.headers["x-cache-match"]) == (200, "hit", "semantic")
    events = meter.take(meter.pending)
    assert sorted((e.purpose, e.public_model, e.cache_hit) for e in events) == [
        ("", "gpt-test", True),
        ("semantic_cache", embedding_routes.route, False),
    ]


async def test_identical_requests_that_waited_on_a_semantic_hit_are_told_semantic_with_its_similarity(
    in_process: None,
    semantic_key: Callable[..., IssuedKey],
    embedding_routes: Embedder,
    django_db_blocker: Any,
    settings: Any,
) -> None:
    # Embeddings that take seconds: the identical requests surely arrive while the leader embeds.
    settings.CACHESTORE_SEMANTIC_EMBEDDING_MODEL = embedding_routes.slow
    settings.CACHESTORE_SEMANTIC_TIMEOUT_SECONDS = 20
    settings.CACHESTORE_SEMANTIC_SYNC_SECONDS = 3600
    key = await sync_to_async(committed(semantic_key))()
    with django_db_blocker.unblock():
        assert (await ask(key, FRANCE)).headers["x-cache"] == "miss"
        await settled()
        before = len(embedding_routes.fake.requests)

        # One leads (it embeds the question and finds FRANCE); the others wait on it.
        answers = await asyncio.gather(*(ask(key, FRANCE_AGAIN) for _ in range(5)))
        await settled()

    assert len(embedding_routes.fake.requests) == before + 1  # the leader's question only
    seen = {(a.status, a.headers["x-cache"], a.headers["x-cache-match"]) for a in answers}
    assert seen == {(200, "hit", "semantic")}
    similarities = {a.headers["x-cache-similarity"] for a in answers}
    assert len(similarities) == 1 and 0.9 <= float(similarities.pop()) <= 1.0
    assert len({a.body for a in answers}) == 1


async def test_an_embedding_slower_than_the_timeout_leaves_a_plain_miss(
    in_process: None,
    semantic_key: Callable[..., IssuedKey],
    embedding_routes: Embedder,
    django_db_blocker: Any,
    settings: Any,
) -> None:
    settings.CACHESTORE_SEMANTIC_EMBEDDING_MODEL = embedding_routes.slow
    settings.CACHESTORE_SEMANTIC_TIMEOUT_SECONDS = 0.3
    key = await sync_to_async(committed(semantic_key))()
    with django_db_blocker.unblock():
        started = time.monotonic()
        answer = await ask(key, FRANCE)
        waited = time.monotonic() - started
        await settled()
    assert (answer.status, answer.headers["x-cache"]) == (200, "miss")
    assert waited < 2.5  # long before the embedding would have come
    assert orjson.loads(answer.body)["object"] == "chat.completion"


# --- The index ------------------------------------------------------------------------


def loaded_index() -> SemanticIndex:
    index = SemanticIndex()
    index.loaded, index.synced_at = True, time.time() + 3600  # nothing to load, no catch-up due
    return index


def vector(text: str) -> Any:
    return unit_vector(embedding(text))


async def test_the_index_finds_the_nearest_live_question_of_one_tenants_partition_only() -> None:
    index, later = loaded_index(), time.time() + 600
    index.put(1, 7, "p", "france", vector(FRANCE), later)
    index.put(2, 7, "p", "bread", vector("how long should sourdough bread proof"), later)
    index.put(3, 8, "p", "other-tenant", vector(FRANCE_AGAIN), later)  # the very question, another tenant
    index.put(4, 7, "q", "other-partition", vector(FRANCE_AGAIN), later)
    found = await index.nearest(7, "p", vector(FRANCE_AGAIN))
    assert found is not None and found.entry_key == "france"
    assert round(found.similarity, 3) == 0.962
    assert await index.nearest(9, "p", vector(FRANCE_AGAIN)) is None  # a tenant with nothing stored


async def test_expired_questions_are_never_found_and_make_room_before_the_index_grows() -> None:
    index = loaded_index()
    index.put(1, 7, "p", "gone", vector(FRANCE), time.time() - 1)
    assert await index.nearest(7, "p", vector(FRANCE)) is None
    for i in range(2, 40):
        index.put(i, 7, "p", f"live-{i}", vector(f"question number {i}"), time.time() + 600)
    assert len(index) == 38  # the expired one was dropped when the arrays were full
    found = await index.nearest(7, "p", vector("question number 17"))
    assert found is not None and found.entry_key == "live-17"


async def test_a_query_of_another_size_finds_nothing_and_a_new_size_replaces_the_partition() -> None:
    index = loaded_index()
    index.put(1, 7, "p", "old", unit_vector([1.0, 0.0, 0.0]), time.time() + 600)
    assert await index.nearest(7, "p", unit_vector([1.0, 0.0])) is None
    index.put(2, 7, "p", "new", unit_vector([0.0, 1.0]), time.time() + 600)
    found = await index.nearest(7, "p", unit_vector([0.0, 1.0]))
    assert found is not None and (found.entry_key, len(index)) == ("new", 1)


def test_a_vector_must_be_finite_and_not_zero() -> None:
    assert unit_vector([]) is None and unit_vector([0.0, 0.0]) is None and unit_vector([float("nan")]) is None
    assert unit_vector(["a"]) is None
    assert np.allclose(unit_vector([3.0, 4.0]), [0.6, 0.8])


async def test_a_process_loads_the_stored_vectors_and_catches_up_with_what_others_store_later(
    django_db_setup: None, django_db_blocker: Any, settings: Any
) -> None:
    from accounts.services import tenant_create

    settings.CACHESTORE_SEMANTIC_SYNC_SECONDS = 0
    with django_db_blocker.unblock():
        tenant = await sync_to_async(committed(lambda: tenant_create(slug=f"sem-{time.time_ns()}")))()
        one = SemanticIndex()  # one process
        await one.add(tenant.pk, "p", "france", vector(FRANCE), created_at=time.time(), expires_at=time.time() + 600)
        other = SemanticIndex()  # another process, started after: it loads what is stored
        found = await other.nearest(tenant.pk, "p", vector(FRANCE_AGAIN))
        assert found is not None and found.entry_key == "france"
        bread = "how long should sourdough bread proof"
        await one.add(tenant.pk, "p", "bread", vector(bread), created_at=time.time(), expires_at=time.time() + 600)
        if other._catching_up is not None:  # the one its first lookup started, maybe before this row
            await other._catching_up
        await other.nearest(tenant.pk, "p", vector(bread))  # due: starts a catch-up, answers from what it has
        assert other._catching_up is not None
        await other._catching_up
        found = await other.nearest(tenant.pk, "p", vector(bread))
        assert found is not None and found.entry_key == "bread"
        assert other.partitions[(tenant.pk, "p")].count == 2  # each row once, whichever way it arrived


# --- What is compared ----------------------------------------------------------------


def test_the_question_is_the_last_user_message_or_the_conversation_without_the_system_prompt() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": [{"type": "text", "text": FRANCE}]},
        ]
    }
    assert question_text(body, scope="last_user_message") == FRANCE
    assert question_text(body, scope="conversation") == f"user: hi\nassistant: hello\nuser: {FRANCE}"
    assert question_text({"messages": [{"role": "system", "content": "x"}]}, scope="last_user_message") == ""


def partition(**changes: Any) -> str:
    body = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": FRANCE}]}
    options: dict[str, Any] = {
        "tenant_id": 1,
        "endpoint": "chat.completions",
        "provider": "openai",
        "upstream_model": "gpt-4o",
        "body": {**body, "temperature": 0},
        "scope": "last_user_message",
        "include_system": True,
        "embedding_model": "embed",
    }
    return partition_key(**{**options, **changes})


def test_only_requests_equal_in_all_but_their_words_share_a_partition() -> None:
    base = partition()
    same = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "other words"}]}
    assert partition(body={**same, "temperature": 0, "user": "u1", "stream": True}) == base
    assert partition(tenant_id=2) != base
    assert partition(upstream_model="gpt-4o-mini") != base
    assert partition(body={**same, "temperature": 1}) != base
    assert partition(body={**same, "temperature": 0, "tools": [{"type": "function"}]}) != base
    assert partition(embedding_model="other") != base
    assert partition(scope="conversation") != base
    other_system = {"messages": [{"role": "system", "content": "Be long."}, {"role": "user", "content": FRANCE}]}
    assert partition(body={**other_system, "temperature": 0}) != base
    assert partition(body={**other_system, "temperature": 0}, include_system=False) == partition(include_system=False)


# --- The commands and the snapshot ------------------------------------------------------


@pytest.mark.django_db
def test_key_create_and_tenant_create_set_the_semantic_cache_and_keys_inherit_the_tenants() -> None:
    from accounts.models import ApiKey, Tenant
    from accounts.snapshots import context_from_key

    out = StringIO()
    call_command(
        "tenant_create",
        "sem-cmd",
        "--cache-ttl",
        "3600",
        "--semantic-threshold",
        "0.95",
        "--semantic-system-prompt",
        "ignore",
        "--embedding-model",
        "embed-small",
        stdout=out,
    )
    call_command("tenant_create", "sem-cmd", "--semantic-scope", "conversation", stdout=out)  # only what is given
    tenant = Tenant.objects.get(slug="sem-cmd")
    assert (tenant.semantic_threshold, tenant.semantic_scope, tenant.semantic_include_system) == (
        Decimal("0.950"),
        "conversation",
        False,
    )
    call_command("key_create", "sem-cmd", "--semantic-threshold", "0.9", "--semantic-max-tokens", "500", stdout=out)
    key = ApiKey.objects.select_related("tenant").get(tenant=tenant)
    semantic = context_from_key(key).semantic
    assert semantic is not None
    assert (semantic.threshold, semantic.scope, semantic.include_system, semantic.max_answer_tokens) == (
        0.9,
        "conversation",
        False,
        500,
    )
    assert (semantic.embedding_model, semantic.ttl_seconds, semantic.min_answer_tokens) == ("embed-small", None, None)


@pytest.mark.django_db
def test_a_key_and_tenant_without_a_threshold_have_the_semantic_cache_off() -> None:
    from accounts.models import ApiKey
    from accounts.services import api_key_issue, tenant_create
    from accounts.snapshots import context_from_key

    _, key = api_key_issue(tenant=tenant_create(slug="sem-off", cache_ttl_seconds=60), semantic_scope="conversation")
    assert context_from_key(ApiKey.objects.select_related("tenant").get(pk=key.pk)).semantic is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--semantic-threshold", "1.5"), "between 0 and 1"),
        (("--semantic-threshold", "high"), "not a number"),
        (("--semantic-scope", "everything"), "invalid choice"),
        (("--semantic-min-tokens", "50", "--semantic-max-tokens", "10"), "no answer would be offered"),
    ],
)
def test_key_create_refuses_semantic_settings_that_cannot_work(args: tuple[str, ...], message: str) -> None:
    from accounts.services import tenant_create

    tenant_create(slug="sem-bad")
    with pytest.raises(CommandError, match=message):
        call_command("key_create", "sem-bad", *args, stdout=StringIO(), stderr=StringIO())


@pytest.mark.django_db
def test_staff_set_the_semantic_cache_of_a_key_in_admin_and_see_the_tenants(admin_client: Any) -> None:
    from accounts.models import ApiKey, Tenant

    tenant = Tenant.objects.create(slug="sem-admin")
    admin_client.post(
        "/admin/accounts/apikey/add/",
        {"tenant": tenant.pk, "name": "k", "semantic_threshold": "0.92", "semantic_scope": "conversation"},
        follow=True,
    )
    key = ApiKey.objects.get(tenant=tenant)
    assert (key.semantic_threshold, key.semantic_scope, key.semantic_include_system) == (
        Decimal("0.920"),
        "conversation",
        None,  # the tenant's
    )
    page = admin_client.get(f"/admin/accounts/tenant/{tenant.pk}/change/").content.decode()
    assert 'name="semantic_threshold"' in page and 'name="semantic_embedding_model"' in page


@pytest.mark.django_db
def test_gateway_apply_sets_a_tenants_semantic_cache_and_applying_again_changes_nothing() -> None:
    from accounts.models import Tenant
    from accounts.services import tenant_create
    from proxy.apply import ApplyError, config_apply

    tenant_create(slug="sem-apply")
    semantic = {"threshold": 0.95, "scope": "conversation", "system_prompt": "ignore", "max_tokens": 800}
    doc = {"tenants": [{"slug": "sem-apply", "cache_ttl": 3600, "semantic": {**semantic, "embedding_model": "e"}}]}
    assert config_apply(doc) == {"tenant saved": 1}
    assert config_apply(doc) == {"tenant unchanged": 1}
    tenant = Tenant.objects.get(slug="sem-apply")
    assert (tenant.cache_ttl_seconds, tenant.semantic_threshold, tenant.semantic_scope) == (
        3600,
        Decimal("0.950"),
        "conversation",
    )
    assert (tenant.semantic_include_system, tenant.semantic_max_answer_tokens, tenant.semantic_embedding_model) == (
        False,
        800,
        "e",
    )
    assert config_apply({"tenants": [{"slug": "sem-apply", "semantic": None}]}) == {"tenant saved": 1}
    assert Tenant.objects.get(slug="sem-apply").semantic_threshold is None  # off; the rest kept
    for bad, message in [
        ({"slug": "sem-apply", "semantic": {"threshold": 2}}, "between 0 and 1"),
        ({"slug": "sem-apply", "semantic": {"scope": "all"}}, "scope must be one of"),
        ({"slug": "sem-apply", "semantic": {"colour": "red"}}, "unknown semantic fields colour"),
        ({"slug": "nobody-here"}, "no such tenant"),
    ]:
        with pytest.raises(ApplyError, match=message):
            config_apply({"tenants": [bad]})


async def test_purging_a_tenants_cache_deletes_its_vectors_everywhere_and_keeps_the_others(
    django_db_setup: None, django_db_blocker: Any
) -> None:
    from accounts.services import tenant_create
    from cachestore.models import SemanticVector
    from cachestore.semantic_index import semantic_index
    from cachestore.services import cache_purge

    with django_db_blocker.unblock():
        mine, other = await sync_to_async(
            committed(
                lambda: (tenant_create(slug=f"sem-p-{time.time_ns()}"), tenant_create(slug=f"sem-q-{time.time_ns()}"))
            )
        )()
        index, later = semantic_index(), time.time() + 600
        for tenant in (mine, other):
            await index.add(tenant.pk, "p", "france", vector(FRANCE), created_at=time.time(), expires_at=later)
        await cache_purge(mine.pk)
        left = await sync_to_async(
            committed(
                lambda: sorted(
                    SemanticVector.objects.filter(tenant__in=[mine, other]).values_list("tenant_id", flat=True)
                )
            )
        )()
        assert left == [other.pk]
        assert await index.nearest(mine.pk, "p", vector(FRANCE)) is None
        assert await index.nearest(other.pk, "p", vector(FRANCE)) is not None
    semantic_index_reset()


def test_a_purge_heard_from_another_process_drops_that_tenants_vectors_here() -> None:
    from cachestore.db_store import DatabaseStore
    from cachestore.lru_store import LruStore
    from cachestore.semantic_index import semantic_index

    semantic_index_reset()
    index, later = semantic_index(), time.time() + 600
    index.put(1, 7, "p", "a", vector(FRANCE), later)
    index.put(2, 8, "p", "b", vector(FRANCE), later)
    store = LruStore(DatabaseStore(), max_bytes=1 << 20)
    store._on_message({"type": "message", "data": orjson.dumps({"origin": "other", "tenant": 7, "key": None})})
    store._on_message({"type": "message", "data": orjson.dumps({"origin": "other", "tenant": 8, "key": "k"})})
    assert sorted(index.partitions) == [(8, "p")]  # a replaced entry is no purge: its vectors stay
    semantic_index_reset()
