"""A TCP proxy the tests put between the gateway and a backing service, to cut or hang it.

proxy = TcpProxy("127.0.0.1", 6379).start()   # then point the gateway at proxy.port
proxy.cut()       # open connections reset, new ones refused
proxy.hang()      # connections accepted, nothing forwarded either way
proxy.restore()   # forwarding again
"""

import asyncio
import contextlib
import socket
import threading
from collections.abc import Coroutine
from typing import Any, Literal

from proxy.tests.live import free_port

Mode = Literal["forward", "cut", "hang"]


class TcpProxy:
    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self.mode: Mode = "forward"
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="tcp-proxy")

    def start(self) -> "TcpProxy":
        self._thread.start()
        self._call(self._listen())
        return self

    def cut(self) -> None:
        self._call(self._set("cut"))

    def hang(self) -> None:
        self._call(self._set("hang"))

    def restore(self) -> None:
        self._call(self._set("forward"))

    def stop(self) -> None:
        self._call(self._set("cut"))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(5)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port, reuse_address=True)

    async def _set(self, mode: Mode) -> None:
        self.mode = mode
        if mode == "forward" and self._server is None:
            await self._listen()
            return
        if mode == "cut":
            if self._server is not None:  # refuse new connections: nothing listens
                self._server.close()
                self._server = None
            for writer in list(self._writers):
                _reset(writer)
            self._writers.clear()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(writer)
            return
        self._writers.add(up_writer)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True)
        for w in (writer, up_writer):
            self._writers.discard(w)
            with contextlib.suppress(Exception):
                w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            while self.mode == "hang":  # hold everything, answer nothing
                await asyncio.sleep(0.01)
            if self.mode == "cut":
                return
            writer.write(data)
            await writer.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST, as a cut network or a killed server does."""
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError):
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    with contextlib.suppress(Exception):
        writer.close()
