"""/v1/realtime: the official SDK's realtime client, through the gateway (uvicorn and daphne), to a
fake realtime provider (proxy.tests.fake_realtime).

What is checked is what a user would: the events the client got and how its socket closed, what
the provider got (the provider's credential, never the client's key; the upstream model name),
and the usage rows (one per response.done, priced from its text, audio and cached tokens).
"""

import asyncio
import base64
import datetime as dt
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from openai import AsyncOpenAI
from websockets.exceptions import ConnectionClosed

from conftest import IssuedKey, Ledger
from proxy.realtime_usage import usage_from_realtime
from proxy.tests.fake_realtime import USAGE_AUDIO, USAGE_TEXT, FakeRealtime
from proxy.tests.live import LiveGateway

REALTIME_SECRET = "sk-realtime-provider-secret"
AZURE_SECRET = "azure-realtime-provider-secret"
MODEL, UPSTREAM = "realtime-test", "gpt-realtime-up"
AZURE_MODEL, AZURE_DEPLOYMENT = "realtime-azure", "my-realtime-deployment"
# USD per million tokens, gpt-realtime's list prices.
RATES = {"input": "4", "cached": "0.4", "output": "16", "audio_input": "32", "audio_output": "64"}
SESSION_LIMIT = 2


@pytest.fixture(scope="module")
def fake_realtime() -> Iterator[FakeRealtime]:
    fake = FakeRealtime().start_in_thread()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def realtime_config(django_db_setup: None, django_db_blocker: Any, fake_realtime: FakeRealtime) -> None:
    from billing.services import price_set
    from proxy.services import provider_upsert, route_upsert

    with django_db_blocker.unblock():
        openai, _ = provider_upsert(
            name="fake-realtime", kind="openai", base_url=fake_realtime.url + "/v1", api_key=REALTIME_SECRET
        )
        route_upsert(model=MODEL, provider=openai, upstream_model=UPSTREAM)
        azure, _ = provider_upsert(
            name="fake-realtime-azure", kind="azure", base_url=fake_realtime.url + "/openai", api_key=AZURE_SECRET
        )
        route_upsert(model=AZURE_MODEL, provider=azure, upstream_model=AZURE_DEPLOYMENT)
        for model in (UPSTREAM, AZURE_DEPLOYMENT):
            price_set(
                model=model,
                input_usd=Decimal(RATES["input"]),
                output_usd=Decimal(RATES["output"]),
                cached_input_usd=Decimal(RATES["cached"]),
                audio_input_usd_per_mtok=Decimal(RATES["audio_input"]),
                audio_output_usd_per_mtok=Decimal(RATES["audio_output"]),
            )


def _gateway(server: str, **env: str) -> LiveGateway:
    return LiveGateway(server=server, env={"PROXY_REALTIME_MAX_SESSIONS_PER_KEY": str(SESSION_LIMIT), **env}).start()


@pytest.fixture(scope="module", params=["uvicorn", "daphne"])
def gateway(request: pytest.FixtureRequest, realtime_config: None) -> Iterator[LiveGateway]:
    """The gateway under uvicorn (the production server) and under daphne."""
    live = _gateway(request.param)
    yield live
    live.terminate()


@pytest.fixture(scope="module")
def uvicorn_gateway(realtime_config: None) -> Iterator[LiveGateway]:
    live = _gateway("uvicorn")
    yield live
    live.terminate()


@pytest.fixture(scope="module")
def short_sessions(realtime_config: None) -> Iterator[LiveGateway]:
    """Sessions idle for 1.5 s, or open for 4 s, are closed."""
    live = _gateway("uvicorn", PROXY_REALTIME_IDLE_TIMEOUT_SECONDS="1.5", PROXY_REALTIME_MAX_SESSION_SECONDS="4")
    yield live
    live.terminate()


async def in_thread(work: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`work` on a worker thread (the ORM refuses to run on the event loop's), its
    database connection given back afterwards (a pooled one would be held for good)."""

    def run() -> Any:
        from django.db import connections

        try:
            return work(*args, **kwargs)
        finally:
            connections.close_all()

    return await asyncio.to_thread(run)


def client_for(gateway: LiveGateway, key: IssuedKey) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=gateway.url + "/v1", api_key=key.plaintext, max_retries=0)


def ws_url(gateway: LiveGateway, model: str = MODEL) -> str:
    return gateway.url.replace("http://", "ws://") + f"/v1/realtime?model={model}"


async def events_until(connection: Any, done: Callable[[Any], bool], timeout: float = 15) -> list[Any]:
    """The events received up to the first one that `done` says is the last."""
    received: list[Any] = []
    async with asyncio.timeout(timeout):
        while not received or not done(received[-1]):
            received.append(await connection.recv())
    return received


async def events_until_closed(connection: Any, timeout: float = 15) -> tuple[list[Any], int | None]:
    """Every event until the gateway closes the socket, and the close code it sent."""
    received: list[Any] = []
    async with asyncio.timeout(timeout):
        while True:
            try:
                received.append(await connection.recv())
            except ConnectionClosed as closed:
                return received, closed.rcvd.code if closed.rcvd else None


def text_message(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def cost_nanos(usage: dict[str, Any]) -> int:
    """What the fake's usage costs at RATES, bucket by bucket, as a price list reads."""
    given_in, given_out = usage["input_token_details"], usage["output_token_details"]
    cached = given_in["cached_tokens_details"]
    tokens = {
        "input": given_in["text_tokens"] - cached["text_tokens"],
        "cached": given_in["cached_tokens"],
        "audio_input": given_in["audio_tokens"] - cached["audio_tokens"],
        "output": given_out["text_tokens"],
        "audio_output": given_out["audio_tokens"],
    }
    usd = sum(Decimal(RATES[name]) * count for name, count in tokens.items()) / 10**6
    return int((usd * 10**9).to_integral_value(rounding="ROUND_CEILING"))


def connections_for(fake: FakeRealtime, model: str) -> list[Any]:
    return [c for c in fake.connections if model in (c.query.get("model"), c.query.get("deployment"))]


# --- through the SDK ------------------------------------------------------------------------


async def test_the_sdk_talks_to_the_model_through_the_gateway_with_the_providers_credential(
    gateway: LiveGateway, key: IssuedKey, fake_realtime: FakeRealtime
) -> None:
    before = len(fake_realtime.connections)
    async with client_for(gateway, key).realtime.connect(model=MODEL) as connection:
        [created] = await events_until(connection, lambda e: True)
        await connection.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await connection.conversation.item.create(item=text_message("Say hello"))
        await connection.response.create()
        events = await events_until(connection, lambda e: e.type == "response.done")
    assert created.type == "session.created" and created.session.model == UPSTREAM
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Hello from the fake realtime model."
    [done] = [e for e in events if e.type == "response.done"]
    assert done.response.usage.input_tokens == USAGE_TEXT["input_tokens"]

    [upstream] = fake_realtime.connections[before:]
    assert upstream.path == "/v1/realtime" and upstream.query == {"model": UPSTREAM}
    assert upstream.headers["authorization"] == f"Bearer {REALTIME_SECRET}"
    assert key.plaintext not in str(upstream.headers) and key.plaintext not in str(upstream.protocols)
    assert upstream.types() == ["session.update", "conversation.item.create", "response.create"]
    assert fake_realtime.wait_for(lambda: upstream.closed)


async def test_each_response_done_leaves_one_usage_row_priced_from_text_audio_and_cached_tokens(
    gateway: LiveGateway, key: IssuedKey, ledger: Ledger
) -> None:
    async with client_for(gateway, key).realtime.connect(model=MODEL) as connection:
        await connection.conversation.item.create(item=text_message("One"))
        await connection.response.create(response={"output_modalities": ["text"]})
        await events_until(connection, lambda e: e.type == "response.done")
        await connection.response.create(response={"output_modalities": ["audio"]})
        events = await events_until(connection, lambda e: e.type == "response.done")
    assert any(e.type == "response.output_audio.delta" for e in events)
    text_row, audio_row = await in_thread(ledger.wait, key.key_id, 2)
    for row, usage in ((text_row, USAGE_TEXT), (audio_row, USAGE_AUDIO)):
        assert (row.endpoint, row.public_model, row.upstream_model, row.provider) == (
            "realtime",
            MODEL,
            UPSTREAM,
            "fake-realtime",
        )
        assert (row.input_tokens, row.cached_input_tokens, row.audio_input_tokens) == (20, 16, 14)
        assert (row.status_code, row.error_code, row.usage_estimated) == (200, "", False)
        assert row.cost_nanos == cost_nanos(usage)
    assert (text_row.output_tokens, text_row.audio_output_tokens) == (12, 0)
    assert (audio_row.output_tokens, audio_row.audio_output_tokens) == (12, 40)
    # 20 x $4 + 16 x $0.40 + 14 x $32 + 12 x $16 per million, and 40 x $64 more for the audio.
    assert (text_row.cost_nanos, audio_row.cost_nanos) == (726_400, 726_400 + 2_560_000)
    assert text_row.request_id != audio_row.request_id


def with_budget(blocker: Any, key: IssuedKey, usd: str) -> None:
    from accounts.models import ApiKey
    from billing.services import budget_set

    with blocker.unblock():
        budget_set(limit_usd=Decimal(usd), period="day", api_key=ApiKey.objects.get(pk=key.key_id))


async def test_a_spent_budget_is_refused_before_the_provider_is_connected(
    gateway: LiveGateway, key: IssuedKey, fake_realtime: FakeRealtime, django_db_blocker: Any, ledger: Ledger
) -> None:
    await in_thread(with_budget, django_db_blocker, key, "0.000001")  # less than one response's worst case
    before = len(fake_realtime.connections)
    async with client_for(gateway, key).realtime.connect(model=MODEL) as connection:
        events, code = await events_until_closed(connection)
    [error] = events
    assert (error.type, error.error.type, error.error.code) == ("error", "invalid_request_error", "budget_exceeded")
    assert code == 4429
    assert len(fake_realtime.connections) == before
    assert await in_thread(ledger.records, key.key_id) == []


async def test_a_response_the_budget_cannot_take_is_refused_with_an_error_event_and_not_passed_on(
    gateway: LiveGateway, key: IssuedKey, fake_realtime: FakeRealtime, django_db_blocker: Any
) -> None:
    # Enough for a response's output alone (4096 tokens at $64 per million: $0.262), which
    # the session is checked for at connect, not with its prompt at the dearest rate ($32) too.
    await in_thread(with_budget, django_db_blocker, key, "0.27")
    before = len(fake_realtime.connections)
    async with client_for(gateway, key).realtime.connect(model=MODEL) as connection:
        await connection.conversation.item.create(item=text_message("An expensive question " * 20))
        await connection.response.create(event_id="evt_client_1")
        events = await events_until(connection, lambda e: e.type == "error")
    error = events[-1]
    assert (error.error.type, error.error.code, error.error.event_id) == (
        "invalid_request_error",
        "budget_exceeded",
        "evt_client_1",
    )
    [upstream] = fake_realtime.connections[before:]
    fake_realtime.wait_for(lambda: upstream.closed)
    assert upstream.types() == ["conversation.item.create"]


async def test_the_browser_form_carries_the_key_in_a_subprotocol_and_realtime_is_accepted(
    gateway: LiveGateway, key: IssuedKey, fake_realtime: FakeRealtime
) -> None:
    before = len(fake_realtime.connections)
    protocols = ("realtime", f"openai-insecure-api-key.{key.plaintext}")
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url(gateway), protocols=protocols) as ws:
        assert ws.protocol == "realtime"
        created = await ws.receive_json(timeout=10)
    assert created["type"] == "session.created"
    [upstream] = fake_realtime.connections[before:]
    assert upstream.protocols == [] and upstream.headers["authorization"] == f"Bearer {REALTIME_SECRET}"
    assert key.plaintext not in str(upstream.headers)


@pytest.mark.parametrize("how", ["revoked", "expired", "unknown"])
async def test_a_revoked_expired_or_unknown_key_is_refused_before_the_provider_is_connected(
    how: str,
    gateway: LiveGateway,
    issue_key: Callable[..., IssuedKey],
    fake_realtime: FakeRealtime,
    django_db_blocker: Any,
) -> None:
    from accounts.models import ApiKey
    from accounts.services import api_key_revoke

    def issue() -> IssuedKey:
        expired = {"expires_at": dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)} if how == "expired" else {}
        key = issue_key(**expired)
        if how == "revoked":
            with django_db_blocker.unblock():
                api_key_revoke(api_key=ApiKey.objects.get(pk=key.key_id))
        return key

    key = await in_thread(issue)
    plaintext = key.plaintext + "x" if how == "unknown" else key.plaintext
    before = len(fake_realtime.connections)
    client = AsyncOpenAI(base_url=gateway.url + "/v1", api_key=plaintext)
    async with client.realtime.connect(model=MODEL) as connection:
        events, code = await events_until_closed(connection)
    expected = {"revoked": "invalid_api_key", "expired": "expired_api_key", "unknown": "invalid_api_key"}[how]
    assert [(e.type, e.error.code) for e in events] == [("error", expected)]
    assert code == 4401 and len(fake_realtime.connections) == before


async def test_a_model_the_key_may_not_use_is_refused_before_the_provider_is_connected(
    gateway: LiveGateway, issue_key: Callable[..., IssuedKey], fake_realtime: FakeRealtime
) -> None:
    key = await in_thread(issue_key, allowed_models=["gpt-test"])
    before = len(fake_realtime.connections)
    async with client_for(gateway, key).realtime.connect(model=MODEL) as connection:
        events, code = await events_until_closed(connection)
    assert [(e.type, e.error.code) for e in events] == [("error", "model_not_allowed")]
    assert code == 4403 and len(fake_realtime.connections) == before


async def test_a_key_may_not_open_more_sessions_than_its_limit(uvicorn_gateway: LiveGateway, key: IssuedKey) -> None:
    client = client_for(uvicorn_gateway, key)
    opened = [await client.realtime.connect(model=MODEL).enter() for _ in range(SESSION_LIMIT)]
    for connection in opened:
        await events_until(connection, lambda e: e.type == "session.created")
    async with client.realtime.connect(model=MODEL) as refused:
        events, code = await events_until_closed(refused)
    assert [(e.type, e.error.code) for e in events] == [("error", "rate_limited")]
    assert code == 4429
    await opened.pop().close()
    deadline = time.monotonic() + 10
    while True:  # the slot is given back once the gateway has seen the close
        async with client.realtime.connect(model=MODEL) as again:
            first = await again.recv()
        if first.type == "session.created" or time.monotonic() > deadline:
            break
    assert first.type == "session.created"
    for connection in opened:
        await connection.close()


async def test_an_idle_session_is_closed_with_an_error_event(short_sessions: LiveGateway, key: IssuedKey) -> None:
    async with client_for(short_sessions, key).realtime.connect(model=MODEL) as connection:
        started = time.monotonic()
        events, code = await events_until_closed(connection)
    assert [e.type for e in events] == ["session.created", "error"]
    assert events[-1].error.code == "session_idle_timeout" and code == 1000
    assert 1.4 < time.monotonic() - started < 4


async def test_a_busy_session_is_closed_at_its_maximum_length(short_sessions: LiveGateway, key: IssuedKey) -> None:
    async with client_for(short_sessions, key).realtime.connect(model=MODEL) as connection:
        started = time.monotonic()
        while time.monotonic() - started < 10:  # never idle: a session.update every half second
            try:
                await connection.session.update(session={"type": "realtime", "instructions": "Be brief."})
            except ConnectionClosed:
                break
            await asyncio.sleep(0.5)
        ended = time.monotonic() - started
        events, code = await events_until_closed(connection)
    assert [e.error.code for e in events if e.type == "error"] == ["session_expired"] and code == 1000
    assert {e.type for e in events} == {"session.created", "session.updated", "error"}
    assert 3.9 < ended < 6


async def test_when_the_provider_closes_the_client_is_told_and_closed_and_the_response_recorded(
    gateway: LiveGateway, key: IssuedKey, ledger: Ledger
) -> None:
    async with client_for(gateway, key).realtime.connect(model=MODEL) as connection:
        await connection.response.create(response={"metadata": {"fake": "close"}})
        events, code = await events_until_closed(connection)
    assert [e.type for e in events] == ["session.created", "response.created", "error"]
    assert events[-1].error.code == "upstream_disconnected" and code == 4502  # the provider's 1011 is not the client's
    [row] = await in_thread(ledger.wait, key.key_id, 1)
    assert (row.endpoint, row.error_code, row.usage_estimated) == ("realtime", "upstream_disconnected", True)


async def test_when_the_client_leaves_the_provider_socket_is_closed_and_the_open_response_recorded(
    gateway: LiveGateway, key: IssuedKey, fake_realtime: FakeRealtime, ledger: Ledger
) -> None:
    before = len(fake_realtime.connections)
    async with client_for(gateway, key).realtime.connect(model=MODEL) as connection:
        await connection.response.create(response={"metadata": {"fake": "slow"}, "output_modalities": ["text"]})
        await events_until(connection, lambda e: e.type == "response.output_text.delta")
    [upstream] = fake_realtime.connections[before:]
    fake_realtime.wait_for(lambda: upstream.closed)
    assert upstream.close_code == 1000
    [row] = await in_thread(ledger.wait, key.key_id, 1)
    assert (row.error_code, row.client_disconnected, row.usage_estimated) == ("client_disconnected", True, True)
    assert row.output_tokens > 0  # the text seen so far, estimated


async def test_a_provider_that_refuses_the_gateways_credential_is_reported_without_it(
    gateway: LiveGateway, key: IssuedKey, fake_realtime: FakeRealtime
) -> None:
    fake_realtime.refuse_status = 401
    try:
        async with client_for(gateway, key).realtime.connect(model=MODEL) as connection:
            events, code = await events_until_closed(connection)
    finally:
        fake_realtime.refuse_status = None
    [error] = events
    assert (error.error.type, error.error.code, code) == ("server_error", "upstream_auth_failed", 4502)
    assert REALTIME_SECRET not in error.error.message


async def test_binary_frames_are_relayed_both_ways(
    gateway: LiveGateway, key: IssuedKey, fake_realtime: FakeRealtime
) -> None:
    before = len(fake_realtime.connections)
    payload = bytes(range(256)) * 4
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(ws_url(gateway), headers=key.headers) as ws:
            assert (await ws.receive_json(timeout=10))["type"] == "session.created"
            await ws.send_bytes(payload)
            echoed = await ws.receive(timeout=10)
    assert echoed.type == aiohttp.WSMsgType.BINARY and echoed.data == payload
    assert fake_realtime.connections[before].binary == [payload]


async def test_an_azure_provider_gets_its_deployment_form_and_its_api_key(
    gateway: LiveGateway, key: IssuedKey, fake_realtime: FakeRealtime, ledger: Ledger
) -> None:
    before = len(fake_realtime.connections)
    async with client_for(gateway, key).realtime.connect(model=AZURE_MODEL) as connection:
        await connection.response.create(response={"output_modalities": ["text"]})
        await events_until(connection, lambda e: e.type == "response.done")
    [upstream] = fake_realtime.connections[before:]
    assert upstream.path == "/openai/realtime"
    assert upstream.query == {"api-version": "2025-04-01-preview", "deployment": AZURE_DEPLOYMENT}
    assert upstream.headers["api-key"] == AZURE_SECRET and "authorization" not in upstream.headers
    [row] = await in_thread(ledger.wait, key.key_id, 1)
    assert (row.provider, row.upstream_model, row.cost_nanos) == ("fake-realtime-azure", AZURE_DEPLOYMENT, 726_400)


async def test_the_beta_protocol_is_passed_on(
    gateway: LiveGateway, key: IssuedKey, fake_realtime: FakeRealtime
) -> None:
    before = len(fake_realtime.connections)
    # This SDK's beta client takes wss:// unless told the WebSocket URL.
    base = gateway.url.replace("http://", "ws://") + "/v1"
    client = AsyncOpenAI(base_url=gateway.url + "/v1", websocket_base_url=base, api_key=key.plaintext)
    async with client.beta.realtime.connect(model=MODEL) as connection:
        await connection.response.create(response={"modalities": ["text"]})
        async with asyncio.timeout(15):
            kinds = []
            async for event in connection:
                kinds.append(event.type)
                if event.type == "response.done":
                    break
    assert "response.text.delta" in kinds
    assert fake_realtime.connections[before].headers["openai-beta"] == "realtime=v1"


async def test_a_response_the_provider_starts_itself_is_recorded_too(
    gateway: LiveGateway, key: IssuedKey, ledger: Ledger
) -> None:
    """Server-side turn detection: the provider answers committed audio without a response.create."""
    audio = base64.b64encode(b"\x00\x01" * 2400).decode()
    async with client_for(gateway, key).realtime.connect(model=MODEL) as connection:
        session = {"type": "realtime", "audio": {"input": {"turn_detection": {"type": "server_vad"}}}}
        await connection.session.update(session=session)
        await connection.input_audio_buffer.append(audio=audio)
        await connection.input_audio_buffer.commit()
        await events_until(connection, lambda e: e.type == "response.done")
    [row] = await in_thread(ledger.wait, key.key_id, 1)
    assert (row.error_code, row.cost_nanos) == ("", cost_nanos(USAGE_TEXT))


def gauge(gateway: LiveGateway, name: str) -> float:
    with urllib.request.urlopen(gateway.url + "/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


async def test_open_sessions_are_a_prometheus_gauge(uvicorn_gateway: LiveGateway, key: IssuedKey) -> None:
    name = "gateway_realtime_sessions"
    assert gauge(uvicorn_gateway, name) == 0
    async with client_for(uvicorn_gateway, key).realtime.connect(model=MODEL) as connection:
        await events_until(connection, lambda e: e.type == "session.created")
        assert gauge(uvicorn_gateway, name) == 1
    deadline = time.monotonic() + 10
    while gauge(uvicorn_gateway, name) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert gauge(uvicorn_gateway, name) == 0


@pytest.mark.parametrize("server", ["uvicorn", "daphne"])
async def test_shutdown_closes_open_sessions_with_an_error_event_and_records_the_open_response(
    server: str, realtime_config: None, key: IssuedKey, ledger: Ledger, fake_realtime: FakeRealtime
) -> None:
    live = await in_thread(_gateway, server)
    try:
        async with client_for(live, key).realtime.connect(model=MODEL) as connection:
            await connection.response.create(response={"metadata": {"fake": "slow"}, "output_modalities": ["text"]})
            await events_until(connection, lambda e: e.type == "response.output_text.delta")
            stopping = asyncio.create_task(asyncio.to_thread(live.terminate))  # SIGTERM, then the exit
            events, code = await events_until_closed(connection)
        exit_code = await stopping
    finally:
        if live.process is not None and live.process.poll() is None:
            live.terminate()
    errors = [e for e in events if e.type == "error"]
    assert [e.error.code for e in errors] == ["server_shutdown"] and code == 4503
    assert exit_code == (0 if server == "daphne" else -signal.SIGTERM)  # uvicorn re-raises the signal it caught
    [row] = await in_thread(ledger.wait, key.key_id, 1)
    assert (row.endpoint, row.error_code, row.usage_estimated) == ("realtime", "server_shutdown", True)


# --- pure: the books ------------------------------------------------------------------------


def test_realtime_usage_is_split_into_disjoint_buckets() -> None:
    usage = usage_from_realtime(USAGE_AUDIO)
    assert usage is not None
    assert (usage.input_tokens, usage.cached_input_tokens, usage.audio_input_tokens) == (20, 16, 14)
    assert (usage.output_tokens, usage.audio_output_tokens) == (12, 40)
    assert usage.total_tokens == USAGE_AUDIO["total_tokens"]


def test_without_a_split_of_the_cached_tokens_they_are_taken_from_text_first() -> None:
    usage = usage_from_realtime(
        {
            "input_tokens": 50,
            "output_tokens": 5,
            "input_token_details": {"text_tokens": 10, "audio_tokens": 40, "cached_tokens": 16},
            "output_token_details": {"text_tokens": 5, "audio_tokens": 0},
        }
    )
    assert usage is not None
    assert (usage.input_tokens, usage.cached_input_tokens, usage.audio_input_tokens) == (0, 16, 34)
