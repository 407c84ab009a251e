"""A cut or hung Redis or database is a quick 503 backend_unavailable, never a 500 or a hang.

The gateway reaches the real Redis (and, on the PostgreSQL run, the real
database) through a TCP proxy of the test's own, which cuts or hangs it.
"""

import os
import socket
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from conftest import IssuedKey
from proxy.tests import live
from proxy.tests.live import LiveGateway
from proxy.tests.tcp_proxy import TcpProxy

REDIS = ("127.0.0.1", 6379)
CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
QUICK = 3.0  # seconds: REDIS_TIMEOUT_SECONDS (1) and the answer, with room for a loaded machine


def reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


needs_redis = pytest.mark.skipif(not reachable(*REDIS), reason="needs a Redis on 127.0.0.1:6379")


@pytest.fixture
def redis_proxy() -> Iterator[TcpProxy]:
    proxy = TcpProxy(*REDIS).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def gateway_on(gateway_config: None) -> Iterator[Callable[..., LiveGateway]]:
    started: list[LiveGateway] = []

    def start(**env: str) -> LiveGateway:
        started.append(LiveGateway(env={"REDIS_TIMEOUT_SECONDS": "1", **env}).start())
        return started[-1]

    yield start
    for gateway in started:
        gateway.terminate()


def chat(gateway: LiveGateway, key: IssuedKey) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    answer = httpx.post(gateway.url + "/v1/chat/completions", json=CHAT, headers=key.headers, timeout=30)
    return answer, time.monotonic() - started


def assert_backend_unavailable(answer: httpx.Response, elapsed: float) -> None:
    assert answer.status_code == 503, answer.text
    error = answer.json()["error"]
    assert (error["code"], error["type"]) == ("backend_unavailable", "overloaded_error")
    assert answer.headers["retry-after"] == "1"
    assert elapsed < QUICK


@needs_redis
@pytest.mark.parametrize("fault", ["cut", "hang"])
def test_a_rate_limited_key_gets_a_quick_503_while_redis_is_cut_or_hung_and_200_once_it_is_back(
    gateway_on: Callable[..., LiveGateway], redis_proxy: TcpProxy, issue_key: Callable[..., IssuedKey], fault: str
) -> None:
    gateway = gateway_on(REDIS_URL=f"redis://127.0.0.1:{redis_proxy.port}/0")
    key = issue_key(rpm_limit=1000)
    assert chat(gateway, key)[0].status_code == 200
    getattr(redis_proxy, fault)()
    for _ in range(2):  # every request, not only the first
        assert_backend_unavailable(*chat(gateway, key))
    redis_proxy.restore()
    deadline = time.monotonic() + 10
    while (answer := chat(gateway, key)[0]).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert answer.status_code == 200


@needs_redis
def test_a_key_with_a_budget_is_refused_while_redis_is_cut(
    gateway_on: Callable[..., LiveGateway],
    redis_proxy: TcpProxy,
    issue_key: Callable[..., IssuedKey],
    django_db_blocker: Any,
) -> None:
    from accounts.models import ApiKey
    from billing.services import budget_set

    gateway = gateway_on(REDIS_URL=f"redis://127.0.0.1:{redis_proxy.port}/0")
    key = issue_key()
    with django_db_blocker.unblock():
        budget_set(api_key=ApiKey.objects.get(pk=key.key_id), period="month", limit_usd=Decimal("10"))
    assert chat(gateway, key)[0].status_code == 200
    redis_proxy.cut()
    assert_backend_unavailable(*chat(gateway, key))  # closed: a budget is never overspent in an outage


@needs_redis
def test_rate_limits_may_fail_open_while_redis_is_cut(
    gateway_on: Callable[..., LiveGateway], redis_proxy: TcpProxy, issue_key: Callable[..., IssuedKey]
) -> None:
    gateway = gateway_on(REDIS_URL=f"redis://127.0.0.1:{redis_proxy.port}/0", PROXY_RATELIMIT_ON_BACKEND_FAILURE="open")
    key = issue_key(rpm_limit=1000)
    assert chat(gateway, key)[0].status_code == 200
    redis_proxy.cut()
    answer, elapsed = chat(gateway, key)
    assert (answer.status_code, elapsed < QUICK) == (200, True)


def _postgres() -> tuple[str, int] | None:
    url = urlsplit(os.environ.get("DATABASE_URL", ""))
    return (url.hostname or "127.0.0.1", url.port or 5432) if url.scheme.startswith("postgres") else None


@pytest.mark.skipif(_postgres() is None, reason="the PostgreSQL run (DATABASE_URL=postgres://...)")
@pytest.mark.parametrize("fault", ["cut", "hang"])
def test_a_key_never_seen_gets_a_quick_503_while_the_database_is_cut_or_hung(
    gateway_on: Callable[..., LiveGateway], issue_key: Callable[..., IssuedKey], fault: str
) -> None:
    host_port = _postgres()
    assert host_port is not None
    known, unseen = issue_key(), issue_key()  # before the gateway starts: no config change reaches it later
    database = TcpProxy(*host_port).start()
    try:
        url = urlsplit(live.test_database_url())
        through = url._replace(netloc=url.netloc.replace(f":{url.port}", f":{database.port}")).geturl()
        gateway = gateway_on(
            DATABASE_URL=through,
            DATABASE_CONNECT_TIMEOUT="1",
            DATABASE_POOL_TIMEOUT="1",
            DATABASE_LOAD_TIMEOUT_SECONDS="2",
        )
        assert chat(gateway, known)[0].status_code == 200  # warm: its key, routes and prices are in memory
        getattr(database, fault)()
        assert chat(gateway, known)[0].status_code == 200  # a warm key needs no database
        answer, elapsed = chat(gateway, unseen)
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["code"] == "backend_unavailable"
        assert elapsed < 5  # the pool's wait and the connect timeout, not the driver's default
    finally:
        database.stop()
