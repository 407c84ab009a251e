"""Cache hits answered before Django (gateway.cache_lane).

The gateway runs in this process through its ASGI application; the
database is blocked once the miss has filled the cache, as in
proxy/tests/test_request_path.py.
"""

import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from billing.meter import meter
from cachestore.flight import writes_settled
from conftest import IssuedKey
from gateway import handlers, lifecycle
from proxy.tests.asgi import AsgiResponse, asgi_call
from proxy.tests.fake_upstream import FakeUpstream
from proxy.upstream import upstream_sessions_close

CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "the lane"}]}
# What differs between any two answers, hits or not.
PER_REQUEST = {
    "x-request-id",
    "x-gateway-overhead-ms",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
    "content-length",
}


@pytest.fixture
async def app(gateway_config: None, monkeypatch: Any) -> AsyncIterator[Any]:
    from gateway.asgi import application

    monkeypatch.setattr(lifecycle, "GATEWAY_BACKGROUND", False)  # events stay queued for the test to read
    meter.take(meter.pending)
    yield application
    meter.take(meter.pending)
    await upstream_sessions_close()  # this test's loop ends with the test


@pytest.fixture
def caching_key(issue_key: Callable[..., IssuedKey]) -> Callable[..., Any]:
    async def issue(**options: Any) -> IssuedKey:
        def committed() -> IssuedKey:
            try:
                return issue_key(cache_ttl_seconds=600, **options)
            finally:
                connection.close()  # this thread's connection would outlive the test database

        return await sync_to_async(committed)()

    return issue


@pytest.fixture
def django_handled(monkeypatch: Any) -> list[str]:
    """The paths of the requests that reached Django's API handler."""
    seen: list[str] = []
    handle = handlers.ApiHandler.handle

    async def counted(self: Any, scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["path"])
        await handle(self, scope, receive, send)

    monkeypatch.setattr(handlers.ApiHandler, "handle", counted)
    return seen


async def post(
    app: Any, key: IssuedKey, body: dict[str, Any], path: str = "/v1/chat/completions", **headers: str
) -> AsgiResponse:
    return await asgi_call(app, "POST", path, headers={**key.headers, **headers}, body=orjson.dumps(body))


async def cached(app: Any, key: IssuedKey, body: dict[str, Any], django_db_blocker: Any, **kwargs: Any) -> AsgiResponse:
    """A first request: a miss, whose answer is then stored."""
    with django_db_blocker.unblock():  # the miss loads the key and the routes
        miss = await post(app, key, body, **kwargs)
        await writes_settled()
    assert (miss.status, miss.headers["x-cache"]) == (200, "miss"), miss.body
    meter.take(meter.pending)
    return miss


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_hit_never_reaches_django_and_sends_what_the_full_path_sends(
    app: Any, caching_key: Any, django_db_blocker: Any, django_handled: list[str], settings: Any, stream: bool
) -> None:
    key = await caching_key()
    body = {**CHAT, "stream": stream}
    await cached(app, key, body, django_db_blocker)
    django_handled.clear()

    lane = await post(app, key, body)
    [lane_event] = meter.take(meter.pending)
    assert django_handled == []
    settings.PROXY_CACHE_LANE = False
    full = await post(app, key, body)
    [full_event] = meter.take(meter.pending)
    assert django_handled == ["/v1/chat/completions"]

    assert (lane.status, lane.headers["x-cache"], lane.body) == (200, "hit", full.body)
    assert {k: v for k, v in lane.headers.items() if k not in PER_REQUEST} == {
        k: v for k, v in full.headers.items() if k not in PER_REQUEST
    }
    if stream:
        assert lane.body.endswith(b"data: [DONE]\n\n") and len(lane.chunks) == len(full.chunks) > 1
    else:
        assert lane.headers["content-length"] == str(len(lane.body))
    assert lane.headers["x-request-id"] == lane_event.request_id != full_event.request_id
    differs = {"request_id": "", "created_at": None, "latency_ms": 0}
    assert dataclasses.replace(lane_event, **differs) == dataclasses.replace(full_event, **differs)
    assert (lane_event.cache_hit, lane_event.cost_nanos, lane_event.saved_nanos) == (True, 0, 13_800)


async def test_embeddings_hits_take_the_lane_too(
    app: Any, caching_key: Any, django_db_blocker: Any, django_handled: list[str]
) -> None:
    key = await caching_key()
    body = {"model": "gpt-test", "input": "embed the lane"}
    miss = await cached(app, key, body, django_db_blocker, path="/v1/embeddings")
    django_handled.clear()

    hit = await post(app, key, body, path="/v1/embeddings")

    assert (hit.status, hit.headers["x-cache"], hit.body) == (200, "hit", miss.body)
    assert django_handled == []
    [event] = meter.take(meter.pending)
    assert (event.endpoint, event.cache_hit) == ("embeddings", True)


async def test_a_miss_goes_the_full_path_once_and_upstream_once(
    app: Any, caching_key: Any, django_db_blocker: Any, django_handled: list[str], fake_upstream: FakeUpstream
) -> None:
    key = await caching_key()
    body = {**CHAT, "messages": [{"role": "user", "content": "never asked before"}]}
    before = len(fake_upstream.requests)

    await cached(app, key, body, django_db_blocker)

    assert django_handled == ["/v1/chat/completions"]
    assert [r.body["messages"] for r in fake_upstream.requests[before:]] == [body["messages"]]


async def test_a_miss_is_authenticated_parsed_routed_hashed_and_looked_up_once(
    app: Any, caching_key: Any, django_db_blocker: Any, monkeypatch: Any
) -> None:
    from accounts import auth, snapshots
    from gateway import cache_lane
    from proxy import caching, pipeline
    from proxy.apis import chat

    counted: dict[str, int] = {}

    def count(module: Any, name: str) -> None:
        original = getattr(module, name)

        def counting(*args: Any, **kwargs: Any) -> Any:
            counted[name] = counted.get(name, 0) + 1
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, counting)

    key = await caching_key()
    for module, name in ((chat, "chat_call"), (pipeline, "plan_for"), (caching, "cache_key")):
        count(module, name)
    monkeypatch.setitem(cache_lane._CACHEABLE, "/v1/chat/completions", chat.chat_call)  # the counting one
    lookups = []
    real_lookup = snapshots.tenant_context_for_key

    async def looked_up(token: str) -> Any:
        lookups.append(token)
        return await real_lookup(token)

    monkeypatch.setattr(auth, "tenant_context_for_key", looked_up)
    reads = []
    store = caching.cache_store()
    real_get = store.get

    async def read(*args: Any) -> Any:
        reads.append(args)
        return await real_get(*args)

    monkeypatch.setattr(store, "get", read)
    body = {**CHAT, "messages": [{"role": "user", "content": "prepared once"}]}

    miss = await cached(app, key, body, django_db_blocker)

    assert counted == {"chat_call": 1, "plan_for": 1, "cache_key": 1}
    assert (len(lookups), len(reads)) == (1, 1)
    assert miss.headers["x-request-id"]  # the lane's id, the one the ledger has (next test)


async def test_a_miss_through_the_lane_is_booked_under_the_id_the_client_was_given(
    app: Any, caching_key: Any, django_db_blocker: Any
) -> None:
    key = await caching_key()
    body = {**CHAT, "messages": [{"role": "user", "content": "which id"}]}
    with django_db_blocker.unblock():
        miss = await post(app, key, body)
        await writes_settled()
    [event] = meter.take(meter.pending)
    assert miss.headers["x-request-id"] == event.request_id


async def test_another_tenants_identical_request_is_not_answered_from_the_first_tenants_entry(
    app: Any, caching_key: Any, django_db_blocker: Any, fake_upstream: FakeUpstream
) -> None:
    first, second = await caching_key(), await caching_key()
    await cached(app, first, CHAT, django_db_blocker)
    before = len(fake_upstream.requests)

    other = await cached(app, second, CHAT, django_db_blocker)

    assert other.headers["x-cache"] == "miss"
    assert len(fake_upstream.requests) == before + 1


async def test_cache_control_no_cache_goes_upstream_even_with_an_entry_stored(
    app: Any, caching_key: Any, django_db_blocker: Any, fake_upstream: FakeUpstream
) -> None:
    key = await caching_key()
    await cached(app, key, CHAT, django_db_blocker)
    before = len(fake_upstream.requests)

    with django_db_blocker.unblock():
        fresh = await post(app, key, CHAT, **{"Cache-Control": "no-cache"})

    assert (fresh.status, fresh.headers["x-cache"]) == (200, "bypass")
    assert len(fake_upstream.requests) == before + 1


async def test_a_request_the_lane_refuses_gets_the_full_paths_error(
    app: Any, caching_key: Any, django_db_blocker: Any, django_handled: list[str]
) -> None:
    key = await caching_key(rpm_limit=2)
    await cached(app, key, CHAT, django_db_blocker)
    wrong = IssuedKey(plaintext=key.plaintext + "x", key_id=0, tenant_id=0)
    django_handled.clear()

    with django_db_blocker.unblock():  # the wrong key's one lookup
        refused = await post(app, wrong, CHAT)
    second = await post(app, key, CHAT)
    limited = await post(app, key, CHAT)

    assert (refused.status, orjson.loads(refused.body)["error"]["code"]) == (401, "invalid_api_key")
    assert (second.status, second.headers["x-cache"]) == (200, "hit")
    assert (limited.status, orjson.loads(limited.body)["error"]["code"]) == (429, "rate_limited")
    assert django_handled == ["/v1/chat/completions", "/v1/chat/completions"]  # the 401 and the 429
    assert [e.cache_hit for e in meter.take(meter.pending)] == [True]  # refusals are not billed


async def test_a_malformed_body_on_a_cacheable_path_gets_the_full_paths_400(
    app: Any, caching_key: Any, django_db_blocker: Any
) -> None:
    key = await caching_key()
    await cached(app, key, CHAT, django_db_blocker)

    broken = await asgi_call(app, "POST", "/v1/chat/completions", headers=key.headers, body=b'{"model": ')

    assert broken.status == 400
    assert orjson.loads(broken.body)["error"]["type"] == "invalid_request_error"
