"""Fake servers (upstreams, embeddings, web pages) served from a thread of
their own with their own event loop, so in-process tests, subprocess gateways
and the official SDKs (which block) can all reach them."""

import asyncio
import socket
import threading
from typing import Self

from aiohttp import web


class ThreadServed:
    """Serves `self.app()` on 127.0.0.1 (or `self.host`) at `self.port` (0:
    any free port, set once bound). The fake keeps `port`, `_loop` and
    `_runner` as attributes of its own; the hooks are its extras."""

    port: int
    _loop: asyncio.AbstractEventLoop | None
    _runner: web.AppRunner | None

    def app(self) -> web.Application:
        raise NotImplementedError

    def _serving(self) -> None:
        """Called on the fake's loop before it serves (loop-bound state)."""

    def _stopping(self) -> None:
        """Called before the server shuts down (release what handlers wait on)."""

    async def _after_cleanup(self) -> None:
        """Awaited on the loop once the server is down, before the loop stops."""

    def start_in_thread(self) -> Self:
        sock = socket.socket()
        sock.bind((getattr(self, "host", "127.0.0.1"), self.port))
        self.port = sock.getsockname()[1]
        ready = threading.Event()

        def serve() -> None:
            self._loop = loop = asyncio.new_event_loop()
            self._serving()
            # Short shutdown timeout: a handler made to hang never finishes by itself.
            self._runner = runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=0.5)
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.SockSite(runner, sock).start())
            ready.set()
            loop.run_forever()

        threading.Thread(target=serve, name=f"fake-{type(self).__name__}", daemon=True).start()
        if not ready.wait(10):
            raise RuntimeError(f"{type(self).__name__} did not start within 10 s")
        return self

    def stop(self) -> None:
        self._stopping()
        if self._loop is not None and self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            asyncio.run_coroutine_threadsafe(self._after_cleanup(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
