"""The warm request path: no database query, exactly one usage event.

These tests carry no `django_db` mark, so pytest-django makes any database
access raise; the gateway runs in this process through its ASGI application.
"""

import gc
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from billing.meter import meter
from conftest import IssuedKey
from gateway import lifecycle
from proxy.tests.asgi import asgi_call
from proxy.upstream import upstream_sessions_close

CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def warm_app(
    gateway_config: None, key: IssuedKey, django_db_blocker: Any, monkeypatch: Any
) -> AsyncIterator[Any]:
    """The application after one request has filled its snapshots."""
    from gateway.asgi import application

    monkeypatch.setattr(lifecycle, "GATEWAY_BACKGROUND", False)  # no writer, no poller
    meter.take(meter.pending)
    with django_db_blocker.unblock():
        first = await asgi_call(
            application, "POST", "/v1/chat/completions", headers=key.headers, body=orjson.dumps(CHAT)
        )
        assert first.status == 200, first.body
    meter.take(meter.pending)
    yield application
    meter.take(meter.pending)
    await upstream_sessions_close()  # this test's loop ends with the test


async def test_the_database_is_really_blocked_here(warm_app: Any) -> None:
    # A key the snapshot has never seen needs its one query, which must fail
    # here: proof that the tests below would notice a query.
    response = await asgi_call(
        warm_app,
        "POST",
        "/v1/chat/completions",
        headers={"Authorization": "Bearer sk-gw-unseen-key"},
        body=orjson.dumps(CHAT),
    )
    assert response.status == 500
    assert orjson.loads(response.body)["error"]["code"] == "internal_error"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_warm_request_makes_no_database_query_and_queues_one_usage_event(
    warm_app: Any, key: IssuedKey, stream: bool
) -> None:
    response = await asgi_call(
        warm_app, "POST", "/v1/chat/completions", headers=key.headers, body=orjson.dumps({**CHAT, "stream": stream})
    )
    assert response.status == 200, response.body
    if stream:
        assert response.headers["content-type"] == "text/event-stream"
        assert response.body.endswith(b"data: [DONE]\n\n")
        assert len(response.chunks) > 1  # relayed as it came, not as one buffered body
    [event] = meter.take(meter.pending)
    assert (event.key_id, event.status_code, event.stream, event.cost_nanos) == (key.key_id, 200, stream, 13_800)
    assert event.request_id == response.headers["x-request-id"]
    assert meter.inflight == 0


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_warm_request_leaves_nothing_for_the_garbage_collector(
    warm_app: Any, key: IssuedKey, stream: bool
) -> None:
    """Objects in a reference cycle wait for the collector, whose pauses
    stall every request in flight; a request's objects must be freed by
    reference counting as soon as it ends."""
    body = orjson.dumps({**CHAT, "stream": stream})
    await asgi_call(warm_app, "POST", "/v1/chat/completions", headers=key.headers, body=body)  # settle caches
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(5):
            response = await asgi_call(warm_app, "POST", "/v1/chat/completions", headers=key.headers, body=body)
            assert response.status == 200, response.body
        del response
        gc.collect()
        transports, left = _connection_cycles_apart(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    meter.take(meter.pending)
    assert left == {}, f"objects left in reference cycles by 5 requests: {left.most_common(12)}"
    assert transports < 5, f"{transports} connections opened by 5 requests: the pools do not reuse them"


def _connection_cycles_apart(garbage: list[Any]) -> tuple[int, Counter[str]]:
    """asyncio's socket transport keeps a bound method of itself (Python
    3.11), so every connection opened is one cycle of five objects. A pool
    (Redis, the upstream's) may open one on its own schedule during the five
    requests; that is per connection, not per request, and is counted apart."""
    transports = [o for o in garbage if type(o).__qualname__ == "_SelectorSocketTransport"]
    in_garbage = {id(o) for o in garbage}
    theirs: set[int] = set()
    todo = list(transports)
    while todo:  # what in the garbage a transport reaches is the transport's
        o = todo.pop()
        if id(o) in in_garbage and id(o) not in theirs:
            theirs.add(id(o))
            todo.extend(gc.get_referents(o))
    left = Counter(type(o).__qualname__ for o in garbage if id(o) not in theirs)
    return len(transports), left


async def test_models_and_errors_make_no_database_query_either(warm_app: Any, key: IssuedKey) -> None:
    listed = await asgi_call(warm_app, "GET", "/v1/models", headers=key.headers)
    assert listed.status == 200
    missing = await asgi_call(
        warm_app, "POST", "/v1/chat/completions", headers=key.headers, body=orjson.dumps({**CHAT, "model": "nope"})
    )
    assert missing.status == 404
    assert meter.pending == 0  # refused before any upstream: nothing to bill


async def test_a_cache_hit_makes_no_database_query_and_is_recorded_as_saved(
    gateway_config: None, issue_key: Any, django_db_blocker: Any, monkeypatch: Any
) -> None:
    from cachestore.flight import writes_settled
    from gateway.asgi import application

    monkeypatch.setattr(lifecycle, "GATEWAY_BACKGROUND", False)

    def issue() -> IssuedKey:
        try:
            return issue_key(cache_ttl_seconds=600)
        finally:
            connection.close()  # this thread's connection would outlive the test database

    key = await sync_to_async(issue)()
    body = orjson.dumps({**CHAT, "messages": [{"role": "user", "content": "cache me"}]})
    meter.take(meter.pending)
    with django_db_blocker.unblock():  # the miss: loads the key, asks the store, stores the answer
        miss = await asgi_call(application, "POST", "/v1/chat/completions", headers=key.headers, body=body)
        await writes_settled()
    assert (miss.status, miss.headers["x-cache"]) == (200, "miss")
    meter.take(meter.pending)

    hit = await asgi_call(application, "POST", "/v1/chat/completions", headers=key.headers, body=body)

    assert (hit.status, hit.headers["x-cache"], hit.body) == (200, "hit", miss.body)
    [event] = meter.take(meter.pending)
    assert (event.cache_hit, event.cost_nanos, event.saved_nanos) == (True, 0, 13_800)
    await upstream_sessions_close()


def test_every_answer_says_how_long_the_gateway_itself_took(live_gateway: Any, key: Any) -> None:
    import time

    import httpx2

    # The fake waits a second before its headers: time the gateway did not spend.
    body = {"model": "fake/fake-slowheaders-1", "messages": [{"role": "user", "content": "hi"}]}
    for stream in (False, True):
        started = time.perf_counter()
        response = httpx2.post(
            live_gateway.url + "/v1/chat/completions", json={**body, "stream": stream}, headers=key.headers, timeout=20
        )
        elapsed_ms = (time.perf_counter() - started) * 1000
        overhead_ms = float(response.headers["x-gateway-overhead-ms"])
        assert response.status_code == 200 and elapsed_ms >= 1000
        assert 0 < overhead_ms < 300, f"{overhead_ms} ms of {elapsed_ms:.0f} ms counted as the gateway's"
    metrics = httpx2.get(live_gateway.url + "/metrics", timeout=20).text
    assert "gateway_overhead_seconds_count" in metrics and "gateway_upstream_seconds_count" in metrics
