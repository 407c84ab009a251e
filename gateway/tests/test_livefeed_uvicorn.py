"""The live feed on the production server: uvicorn, as `make run` and the compose image serve it.

A staff session logs in over HTTP, opens /ws/live/ with aiohttp's WebSocket client and sees the
event of a /v1 request it made; with ?tenant=<slug> it sees that tenant's events only.
"""

import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest

from conftest import IssuedKey
from proxy.tests.live import LiveGateway

CSRF_FIELD = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


@pytest.fixture(scope="module")
def uvicorn_gateway(gateway_config: None) -> Iterator[LiveGateway]:
    """The gateway under uvicorn, started with serve's own command line."""
    gateway = LiveGateway(server="uvicorn").start()
    yield gateway
    gateway.terminate()


@pytest.fixture
def staff_login(django_db_blocker: Any) -> tuple[str, str]:
    from django.contrib.auth import get_user_model

    username, password = f"staff-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    with django_db_blocker.unblock():
        get_user_model().objects.create_superuser(username, f"{username}@example.test", password)
    return username, password


def browser_session() -> aiohttp.ClientSession:
    # unsafe: keep the cookies an IP address (127.0.0.1) sets, as a browser does.
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30), cookie_jar=aiohttp.CookieJar(unsafe=True))


async def logged_in(session: aiohttp.ClientSession, base: str, login: tuple[str, str]) -> None:
    async with session.get(base + "/admin/login/") as page:
        match = CSRF_FIELD.search(await page.text())
    assert match, "no CSRF token on the login page"
    form = {"csrfmiddlewaretoken": match.group(1), "username": login[0], "password": login[1], "next": "/admin/"}
    async with session.post(base + "/admin/login/?next=/admin/", data=form, allow_redirects=False) as answer:
        assert answer.status == 302, await answer.text()


async def chat(session: aiohttp.ClientSession, base: str, key: IssuedKey) -> None:
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": "hello"}]}
    async with session.post(base + "/v1/chat/completions", json=body, headers=key.headers) as answer:
        assert answer.status == 200, await answer.text()
        await answer.read()


async def events_until(
    socket: aiohttp.ClientWebSocketResponse, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 10
) -> list[dict[str, Any]]:
    """Every event received until `done(received)` holds (or the deadline passes)."""
    received: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not done(received):
        left = deadline - time.monotonic()
        assert left > 0, f"timed out; received {received}"
        message = await socket.receive(timeout=left)
        assert message.type == aiohttp.WSMsgType.TEXT, message
        received += message.json()
    return received


async def test_under_uvicorn_staff_see_a_v1_request_arrive_on_the_live_feed(
    uvicorn_gateway: LiveGateway, staff_login: tuple[str, str], key: IssuedKey
) -> None:
    base = uvicorn_gateway.url
    async with browser_session() as session:
        await logged_in(session, base, staff_login)
        async with session.ws_connect(base + "/ws/live/", origin=base) as socket:
            await chat(session, base, key)
            received = await events_until(socket, lambda got: any(e["key_id"] == key.key_id for e in got))
    [event] = [e for e in received if e["key_id"] == key.key_id]
    assert (event["model"], event["status"], event["tenant_id"]) == ("gpt-test", 200, key.tenant_id)


@pytest.fixture
def two_tenants(issue_key: Callable[..., IssuedKey], django_db_blocker: Any) -> tuple[IssuedKey, IssuedKey, str]:
    """A key of the watched tenant, a key of another, and the watched tenant's slug."""
    from accounts.models import Tenant

    watched, other = issue_key(), issue_key()
    with django_db_blocker.unblock():
        slug = Tenant.objects.get(pk=watched.tenant_id).slug
    return watched, other, slug


async def test_with_a_tenant_in_the_query_only_that_tenants_events_arrive(
    uvicorn_gateway: LiveGateway, staff_login: tuple[str, str], two_tenants: tuple[IssuedKey, IssuedKey, str]
) -> None:
    watched, other, slug = two_tenants
    base = uvicorn_gateway.url
    async with browser_session() as session:
        await logged_in(session, base, staff_login)
        async with session.ws_connect(base + f"/ws/live/?tenant={slug}", origin=base) as socket:
            # The other tenant's requests go first: had they been let through,
            # they would arrive before (or with) the watched tenant's.
            await chat(session, base, other)
            await chat(session, base, other)
            await chat(session, base, watched)
            received = await events_until(socket, lambda got: any(e["key_id"] == watched.key_id for e in got))
    assert {(e["tenant_id"], e["tenant"]) for e in received} == {(watched.tenant_id, slug)}


async def test_an_unknown_tenant_in_the_query_is_refused_not_widened_to_every_tenant(
    uvicorn_gateway: LiveGateway, staff_login: tuple[str, str]
) -> None:
    base = uvicorn_gateway.url
    async with browser_session() as session:
        await logged_in(session, base, staff_login)
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with session.ws_connect(base + "/ws/live/?tenant=no-such-tenant", origin=base):
                pass
    assert refused.value.status == 403
