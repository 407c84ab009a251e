"""The live feed: usage events reach staff browsers from any thread; nobody else gets in; the meter never notices it."""

import asyncio
import datetime as dt
import logging
import threading
from typing import Any

import pytest
from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.routing import URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser

from accounts.services import api_key_issue, tenant_create
from gateway import livefeed
from gateway.kernel.context import Usage, UsageEvent
from gateway.livefeed import LiveFeedConsumer, LiveFeedPublisher, event_payload, websocket_urlpatterns

AT = dt.datetime(2025, 3, 4, 10, 30, 15, tzinfo=dt.UTC)


def usage_event(key_id: int = 1, tenant_id: int = 1, **fields: Any) -> UsageEvent:
    values: dict[str, Any] = {
        "request_id": "req_1",
        "created_at": AT,
        "tenant_id": tenant_id,
        "key_id": key_id,
        "endpoint": "chat.completions",
        "public_model": "gpt-test",
        "upstream_model": "gpt-up",
        "provider": "fake",
        "status_code": 200,
        "usage": Usage(input_tokens=10, cached_input_tokens=2, output_tokens=5, reasoning_tokens=1),
        "cost_nanos": 13_800,
        "latency_ms": 420,
        "stream": True,
        "ttft_ms": 80,
        **fields,
    }
    return UsageEvent(**values)


def test_an_event_is_sent_small_with_its_cost_as_an_exact_usd_string() -> None:
    assert event_payload(usage_event()) == {
        "time": "2025-03-04T10:30:15+00:00",
        "request_id": "req_1",
        "tenant_id": 1,
        "key_id": 1,
        "model": "gpt-test",
        "provider": "fake",
        "status": 200,
        "input_tokens": 12,
        "output_tokens": 6,
        "cost_usd": "0.000013800",
        "latency_ms": 420,
        "ttft_ms": 80,
        "cache_hit": False,
        "stream": True,
    }


async def connect(user: Any) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(LiveFeedConsumer.as_asgi(), "/ws/live/")
    communicator.scope["user"] = user
    return communicator


@pytest.fixture
def publisher(monkeypatch: Any) -> LiveFeedPublisher:
    fresh = LiveFeedPublisher()
    monkeypatch.setattr(livefeed, "publisher", fresh)
    monkeypatch.setattr(livefeed, "FLUSH_SECONDS", 0.01)
    return fresh


@pytest.mark.django_db(transaction=True)
async def test_staff_see_events_pushed_from_a_worker_thread_with_tenant_and_key_names(
    publisher: LiveFeedPublisher, admin_user: Any
) -> None:
    tenant = await database_sync_to_async(tenant_create)(slug="acme")
    _, key = await database_sync_to_async(api_key_issue)(tenant=tenant)
    communicator = await connect(admin_user)
    connected, _ = await communicator.connect()
    assert connected

    pushers = [
        threading.Thread(target=publisher, args=(usage_event(key.pk, tenant.pk, request_id=f"req_{i}"),))
        for i in range(3)
    ]
    for thread in pushers:
        thread.start()
    for thread in pushers:
        thread.join()
    received: list[dict[str, Any]] = []
    while len(received) < 3:
        received += await communicator.receive_json_from(timeout=2)

    assert sorted(event["request_id"] for event in received) == ["req_0", "req_1", "req_2"]
    assert {(event["tenant"], event["key_prefix"]) for event in received} == {("acme", key.prefix)}
    await communicator.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_anonymous_and_non_staff_users_are_refused(django_user_model: Any) -> None:
    user = await database_sync_to_async(django_user_model.objects.create_user)("viewer", password="x")
    for who in (AnonymousUser(), user):
        communicator = await connect(who)
        connected, code = await communicator.connect()
        assert (connected, code) == (False, livefeed.CLOSE_FORBIDDEN)


async def test_a_browser_from_another_site_is_refused_before_any_login_check() -> None:
    app = AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
    communicator = WebsocketCommunicator(app, "/ws/live/", headers=[(b"origin", b"http://evil.example")])
    connected, _ = await communicator.connect()
    assert not connected


async def test_a_failing_channel_layer_never_reaches_the_meter(
    publisher: LiveFeedPublisher, monkeypatch: Any, caplog: Any
) -> None:
    def broken_layer() -> Any:
        raise ConnectionError("redis is down")

    monkeypatch.setattr(livefeed, "get_channel_layer", broken_layer)
    with caplog.at_level(logging.WARNING, logger="gateway.livefeed"):
        publisher(usage_event())  # returns at once, raising nothing
        await asyncio.sleep(0.1)
    assert [r.getMessage() for r in caplog.records] == ["live feed: 1 events not sent"]


def test_without_an_event_loop_events_wait_in_a_bounded_buffer(publisher: LiveFeedPublisher, monkeypatch: Any) -> None:
    monkeypatch.setattr(livefeed, "MAX_BUFFERED", 2)
    bounded = LiveFeedPublisher()
    for i in range(5):
        bounded(usage_event(request_id=f"req_{i}"))  # no loop in this thread and none bound: nothing scheduled
    assert [event.request_id for event in bounded._buffer] == ["req_3", "req_4"]


async def test_a_burst_of_events_is_sent_as_one_message(publisher: LiveFeedPublisher, monkeypatch: Any) -> None:
    sent: list[dict[str, Any]] = []

    class Layer:
        async def group_send(self, group: str, message: dict[str, Any]) -> None:
            sent.append({"group": group, **message})

    monkeypatch.setattr(livefeed, "get_channel_layer", Layer)
    for i in range(50):
        publisher(usage_event(request_id=f"req_{i}"))
    await asyncio.sleep(0.1)
    assert [(m["group"], m["type"], len(m["events"])) for m in sent] == [("live_feed", "live.events", 50)]


@pytest.mark.django_db(transaction=True)
async def test_an_unknown_tenant_slug_is_refused_with_its_own_close_code(admin_user: Any) -> None:
    communicator = WebsocketCommunicator(LiveFeedConsumer.as_asgi(), "/ws/live/?tenant=no-such-tenant")
    communicator.scope["user"] = admin_user
    connected, code = await communicator.connect()
    assert (connected, code) == (False, livefeed.CLOSE_UNKNOWN_TENANT)
