"""SIGTERM under daphne and uvicorn: streams in flight are finished or recorded, never lost."""

import asyncio
import signal
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest

from conftest import IssuedKey, Ledger
from proxy.tests.live import LiveGateway

STREAMS = 50
SLOW_STREAM = {"model": "fake/fake-slow", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def start_gateway(gateway_config: None) -> Iterator[Callable[..., LiveGateway]]:
    started: list[LiveGateway] = []

    def start(server: str = "daphne", **env: str) -> LiveGateway:
        started.append(LiveGateway(env=env, server=server).start())
        return started[-1]

    yield start
    for gateway in started:
        if gateway.process and gateway.process.poll() is None:
            gateway.process.kill()


async def streams_interrupted_by_sigterm(gateway: LiveGateway, key: IssuedKey) -> tuple[list[bytes], bool]:
    """Open STREAMS slow streams, SIGTERM the server once each has received
    a few words, and return what each client received, and whether a new
    connection was refused while they finished."""
    started = asyncio.Event()
    under_way = 0

    async def one(session: aiohttp.ClientSession) -> bytes:
        nonlocal under_way
        received = b""
        try:
            async with session.post(gateway.url + "/v1/chat/completions", json=SLOW_STREAM, headers=key.headers) as r:
                async for chunk in r.content.iter_any():
                    before = received.count(b"data: ")
                    received += chunk
                    if before < 4 <= received.count(b"data: "):
                        under_way += 1
                        if under_way == STREAMS:
                            started.set()
        except aiohttp.ClientError:
            pass  # a cut connection is what the short-grace test expects
        return received

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        tasks = [asyncio.create_task(one(session)) for _ in range(STREAMS)]
        await asyncio.wait_for(started.wait(), 20)
        assert gateway.process is not None
        gateway.process.send_signal(signal.SIGTERM)
        refused = await refuses_connections(gateway, within=5)
        return await asyncio.gather(*tasks), refused


async def refuses_connections(gateway: LiveGateway, within: float) -> bool:
    """Whether the server stops accepting new connections within `within` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    quick = aiohttp.ClientTimeout(total=1)
    while asyncio.get_running_loop().time() < deadline:
        try:
            async with aiohttp.ClientSession(timeout=quick) as fresh, fresh.get(gateway.url + "/healthz") as response:
                await response.read()
        except aiohttp.ClientConnectorError:
            return True
        except (aiohttp.ClientError, TimeoutError):
            pass  # accepted, then dropped: the listener may be closing
        await asyncio.sleep(0.05)
    return False


@pytest.mark.parametrize("server", ["daphne", "uvicorn"])
def test_sigterm_lets_streams_in_flight_finish_and_stores_every_usage_record(
    start_gateway: Callable[..., LiveGateway], key: IssuedKey, ledger: Ledger, server: str
) -> None:
    # A flush interval longer than the test: only the shutdown drain can store these.
    gateway = start_gateway(server, BILLING_METER_FLUSH_SECONDS="60", GATEWAY_SHUTDOWN_GRACE_SECONDS="15")
    bodies, refused = asyncio.run(streams_interrupted_by_sigterm(gateway, key))
    assert refused, "no new connection is accepted once SIGTERM arrived"
    # uvicorn ends a graceful shutdown by re-raising the signal it caught.
    assert gateway.terminate() == (0 if server == "daphne" else -signal.SIGTERM)
    assert all(body.endswith(b"data: [DONE]\n\n") for body in bodies), "every stream completes within the grace"
    records = ledger.wait(key.key_id, STREAMS, timeout=2)
    assert all(r.status_code == 200 and r.error_code == "" and not r.usage_estimated for r in records)
    assert all(r.output_tokens == 20 for r in records)
    assert "shutdown complete" in gateway.log()


def test_sigterm_with_a_short_grace_records_unfinished_streams_as_estimated(
    start_gateway: Callable[..., LiveGateway], key: IssuedKey, ledger: Ledger
) -> None:
    gateway = start_gateway(BILLING_METER_FLUSH_SECONDS="60", GATEWAY_SHUTDOWN_GRACE_SECONDS="0")
    bodies: list[Any] = asyncio.run(streams_interrupted_by_sigterm(gateway, key))[0]
    gateway.terminate()
    unfinished = sum(not body.endswith(b"data: [DONE]\n\n") for body in bodies)
    assert unfinished > 0, "the streams are slow enough to be cut"
    records = ledger.wait(key.key_id, STREAMS, timeout=2)
    cut = [r for r in records if r.error_code == "server_shutdown"]
    assert len(cut) >= unfinished
    assert all(r.usage_estimated and r.output_tokens > 0 and r.cost_nanos > 0 for r in cut)


@pytest.mark.parametrize("server", ["daphne", "uvicorn"])
def test_streams_longer_than_the_grace_end_with_an_error_event_and_are_recorded_as_cut(
    start_gateway: Callable[..., LiveGateway], key: IssuedKey, ledger: Ledger, server: str
) -> None:
    gateway = start_gateway(server, BILLING_METER_FLUSH_SECONDS="60", GATEWAY_SHUTDOWN_GRACE_SECONDS="1")
    bodies: list[bytes] = asyncio.run(streams_interrupted_by_sigterm(gateway, key))[0]
    assert gateway.terminate() in (0, -signal.SIGTERM)
    cut = [body for body in bodies if not body.endswith(b"data: [DONE]\n\n")]
    assert cut, "the streams are slower than the grace"
    assert all(b'"code":"server_shutdown"' in body.rsplit(b"data: ", 1)[-1] for body in cut), cut[0][-300:]
    records = ledger.wait(key.key_id, STREAMS, timeout=5)
    assert sum(r.error_code == "server_shutdown" for r in records) == len(cut)
    assert all(r.error_code in ("", "server_shutdown") and not r.client_disconnected for r in records)
    if server == "uvicorn":  # the production server cancelled them with a traceback each
        assert "Traceback" not in gateway.log()
