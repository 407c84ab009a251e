"""Fixtures shared by every app's tests.

The fake upstream runs in a thread of the test process; the gateway under
test runs either in-process (ASGI calls, for the request path's own tests)
or under daphne in a subprocess on the same test database (for the SDK,
error and shutdown tests). Data the subprocess must see is committed
through `django_db_blocker.unblock()` rather than inside a test transaction.
"""

import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest

from proxy.tests.fake_upstream import FakeUpstream
from proxy.tests.live import LiveGateway, free_port

UPSTREAM_SECRET = "sk-upstreamsecret123"
# Redis outlives test databases (whose ids restart at 1): one namespace per run.
os.environ["REDIS_KEY_PREFIX"] = f"gwtest-{os.getpid()}-{uuid.uuid4().hex[:6]}"
# Usage left on disk by one run (a killed gateway's journal, a spool) belongs
# to that run's database: each run, and its gateways, get folders of their own.
_RUN_DIR = Path(__file__).resolve().parent / "var" / f"test-run-{os.getpid()}"
os.environ["BILLING_JOURNAL_DIR"] = str(_RUN_DIR / "usage-journal")
os.environ["BILLING_SPOOL_DIR"] = str(_RUN_DIR / "usage-spool")


@pytest.fixture(scope="session")
def django_db_setup(django_test_environment: None, django_db_blocker: Any) -> Iterator[None]:
    """Always create the test database: most tests here reach it from a
    subprocess or through the blocker, without a `django_db` mark that would
    make pytest-django create it."""
    from django.test.utils import setup_databases, teardown_databases

    with django_db_blocker.unblock():
        config = setup_databases(verbosity=0, interactive=False, aliases={"default"}, serialized_aliases=set())
    yield
    with django_db_blocker.unblock():
        _end_other_sessions()
        teardown_databases(config, verbosity=0)


def _end_other_sessions() -> None:
    """PostgreSQL will not drop a database with sessions on it. A connection
    that a worker thread of an async test client checked out of the pool is
    never given back; end such sessions so the test database can go."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )


@pytest.fixture(scope="session", autouse=True)
def redis_namespace() -> None:
    """The same per-run Redis namespace here as in the gateway subprocesses
    (settings may have been read before this module set the variable)."""
    from django.conf import settings

    settings.REDIS_KEY_PREFIX = os.environ["REDIS_KEY_PREFIX"]
    settings.BILLING_JOURNAL_DIR = Path(os.environ["BILLING_JOURNAL_DIR"])
    settings.BILLING_SPOOL_DIR = Path(os.environ["BILLING_SPOOL_DIR"])


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream().start_in_thread()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def gateway_config(django_db_setup: None, django_db_blocker: Any, fake_upstream: FakeUpstream) -> None:
    """Providers, routes and prices for the whole session (committed)."""
    from billing.services import price_set
    from proxy.services import provider_upsert, route_upsert

    with django_db_blocker.unblock():
        fake, _ = provider_upsert(name="fake", kind="openai", base_url=fake_upstream.url, api_key=UPSTREAM_SECRET)
        route_upsert(model="gpt-test", provider=fake, upstream_model="gpt-up")
        route_upsert(model="fake/*", provider=fake)
        price_set(
            model="gpt-up", input_usd=Decimal("0.15"), output_usd=Decimal("0.60"), cached_input_usd=Decimal("0.075")
        )
        price_set(
            model="fake-cached", input_usd=Decimal("2.50"), output_usd=Decimal("10"), cached_input_usd=Decimal("1.25")
        )
        price_set(model="fake-slow", input_usd=Decimal("1"), output_usd=Decimal("2"))
        # Budget tests: input is free, so a request's worst case (max_tokens=20
        # at $1/M = 20_000 nanos) is exactly what it costs.
        route_upsert(model="budget-model", provider=fake, upstream_model="fake-budget")
        price_set(model="fake-budget", input_usd=Decimal("0"), output_usd=Decimal("1"))
        dead, _ = provider_upsert(name="dead", kind="openai", base_url=f"http://127.0.0.1:{free_port()}/v1")
        route_upsert(model="dead-model", provider=dead)
        # Priced, so that keys with budgets may reach them (an unpriced model is refused to those).
        for failing in ("dead-model", "fake-error-500"):
            price_set(model=failing, input_usd=Decimal("1"), output_usd=Decimal("1"))
        # The same fake as an Anthropic upstream, and as an OpenAI-compatible
        # server without the Responses API or legacy completions.
        anthropic, _ = provider_upsert(
            name="fake-anthropic", kind="anthropic", base_url=fake_upstream.url, api_key=UPSTREAM_SECRET
        )
        route_upsert(model="claude-test", provider=anthropic, upstream_model="claude-up")
        route_upsert(model="claude-cached", provider=anthropic, upstream_model="claude-fake-cached")
        route_upsert(model="claude-error-*", provider=anthropic, upstream_model="claude-error-")
        price_set(model="claude-up", input_usd=Decimal("3"), output_usd=Decimal("15"))
        price_set(
            model="claude-fake-cached",
            input_usd=Decimal("3"),
            output_usd=Decimal("15"),
            cached_input_usd=Decimal("0.30"),
            cache_write_5m_usd_per_mtok=Decimal("3.75"),
            cache_write_1h_usd_per_mtok=Decimal("6"),
        )
        compat, _ = provider_upsert(
            name="fake-compat", kind="openai-compatible", base_url=fake_upstream.url, api_key=UPSTREAM_SECRET
        )
        route_upsert(model="compat-test", provider=compat, upstream_model="gpt-up")


@pytest.fixture(scope="session")
def live_gateway(gateway_config: None) -> Iterator[LiveGateway]:
    gateway = LiveGateway().start()
    yield gateway
    gateway.terminate()


@dataclass(frozen=True)
class IssuedKey:
    plaintext: str
    key_id: int
    tenant_id: int

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.plaintext}"}


@pytest.fixture
def issue_key(django_db_blocker: Any) -> Callable[..., IssuedKey]:
    """A fresh tenant and key per call (committed), so tests never share usage."""
    from accounts.services import api_key_issue, tenant_create

    def issue(**options: Any) -> IssuedKey:
        with django_db_blocker.unblock():
            tenant = tenant_create(slug=f"t-{uuid.uuid4().hex[:12]}")
            plaintext, api_key = api_key_issue(tenant=tenant, name="test", **options)
        return IssuedKey(plaintext=plaintext, key_id=api_key.pk, tenant_id=tenant.pk)

    return issue


@pytest.fixture
def key(issue_key: Callable[..., IssuedKey]) -> IssuedKey:
    return issue_key()


class Ledger:
    """Reads usage records written by the gateway (in this or another process)."""

    def __init__(self, blocker: Any) -> None:
        self.blocker = blocker

    def records(self, key_id: int) -> list[Any]:
        from billing.models import UsageRecord

        with self.blocker.unblock():
            return list(UsageRecord.objects.filter(api_key_id=key_id).order_by("created_at", "id"))

    def wait(self, key_id: int, count: int, timeout: float = 10.0) -> list[Any]:
        """The key's records once there are `count` of them and every gateway
        has stored all it holds, so that a duplicate would be among them."""
        from proxy.tests.live import usage_settled

        deadline = time.monotonic() + timeout
        while len(self.records(key_id)) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        while not usage_settled() and time.monotonic() < deadline:
            time.sleep(0.02)
        rows = self.records(key_id)
        assert len(rows) == count, f"expected {count} usage records, found {len(rows)}: {rows}"
        return rows


@pytest.fixture
def ledger(django_db_blocker: Any) -> Ledger:
    return Ledger(django_db_blocker)


T = TypeVar("T")
POLL_SECONDS = 0.02


def wait_until(condition: Callable[[], T], timeout: float = 10.0, message: Any = "condition not met in time") -> T:
    """The condition's first true value, asked again every POLL_SECONDS
    until `timeout`; then the test fails with `message` (called if callable,
    to show the state it timed out in)."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, message() if callable(message) else message
        time.sleep(POLL_SECONDS)
    return value


async def await_until(
    condition: Callable[[], Any], timeout: float = 10.0, message: Any = "condition not met in time"
) -> Any:
    """wait_until for a coroutine's condition (`condition()` returns an awaitable)."""
    import asyncio

    deadline = time.monotonic() + timeout
    while not (value := await condition()):
        assert time.monotonic() < deadline, message() if callable(message) else message
        await asyncio.sleep(POLL_SECONDS)
    return value


def unique_marker() -> str:
    return f"marker-{uuid.uuid4().hex}"


# --- A hung test must not hang the run ------------------------------------------
# pytest-timeout fails a test that runs too long by interrupting the main thread
# only. Whatever that test was waiting on (an event loop in a worker thread of an
# async-to-sync call, say) stays blocked, and the interpreter's exit would join that
# thread forever: the run prints its summary and then never ends. So once pytest is
# done, a run that still has threads going exits with pytest's status at once
# (idle pool workers hold nothing that needs their exit hooks).

_EXIT_STATUS = pytest.StashKey[int]()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_EXIT_STATUS] = int(exitstatus)
    shutil.rmtree(_RUN_DIR, ignore_errors=True)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    import sys
    import threading

    status = config.stash.get(_EXIT_STATUS, None)
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if status is not None and others:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
