"""A webhook receiver in the test process: an aiohttp server on its own
thread that checks each POST's signature as a receiver would, and answers
401 when it is wrong. It can be stopped and started again on the same port
(a receiver that is down, then back)."""

import asyncio
import hashlib
import hmac
import json
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from proxy.tests.live import free_port


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    raw: bytes
    signature_valid: bool

    @property
    def json(self) -> Any:
        return json.loads(self.raw)


def verify(secret: str, raw: bytes, header: str) -> bool:
    """What the README tells receivers to do."""
    expected = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header)


@dataclass
class WebhookReceiver:
    secret: str
    port: int = field(default_factory=free_port)
    status: int = 200  # what it answers a correctly signed POST
    received: list[Received] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None
    _thread: threading.Thread | None = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def events(self) -> list[str]:
        return [r.json["event"] for r in self.received]

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        valid = verify(self.secret, raw, request.headers.get("x-gateway-signature", ""))
        self.received.append(Received(request.path, {k.lower(): v for k, v in request.headers.items()}, raw, valid))
        if not valid:
            return web.Response(status=401, text="bad signature")
        return web.Response(status=self.status, text="ok" if self.status < 300 else "receiver error")

    def start(self) -> "WebhookReceiver":
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            app = web.Application()
            app.router.add_post("/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app)
            self._loop.run_until_complete(self._runner.setup())
            self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name="webhook-receiver")
        self._thread.start()
        assert ready.wait(5), "the webhook receiver did not start"
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop = self._thread = None
