import asyncio
import importlib.util
import math
import os
import signal
import subprocess
import sys
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Run the embedded gateway: uvicorn (or daphne) plus a Celery worker with beat, until interrupted."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=os.environ.get("GATEWAY_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("GATEWAY_PORT", "8000")))
        parser.add_argument("--no-worker", action="store_true", help="Run the web server only.")
        parser.add_argument(
            "--server",
            choices=["uvicorn", "daphne"],
            default=os.environ.get("GATEWAY_SERVER", "uvicorn"),
            help="uvicorn (the default: about 1.5x daphne's requests per core, see bench/) or daphne.",
        )

    def handle(self, *args: Any, host: str, port: int, no_worker: bool, server: str, **options: Any) -> None:
        settings.VAR_DIR.mkdir(exist_ok=True)
        python = sys.executable
        children = []
        if not no_worker:
            # One solo worker with embedded beat: the embedded run has one
            # process of each, and beat must never run twice.
            children.append(
                subprocess.Popen(
                    [
                        python,
                        "-m",
                        "celery",
                        "-A",
                        "gateway.celery",
                        "worker",
                        "--beat",
                        "--pool",
                        "solo",
                        "--loglevel",
                        "INFO",
                        "--schedule",
                        settings.CELERY_BEAT_SCHEDULE_FILENAME,
                    ],
                    env={**os.environ, "DATABASE_POOL": "0"},
                )
            )
        children.append(subprocess.Popen(web_server_command(server, host, port)))
        self.stdout.write(f"gateway on http://{host}:{port}/v1 (admin: http://{host}:{port}/admin/); Ctrl-C stops")

        def stop(signum: int, frame: Any) -> None:
            for child in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        try:
            while all(child.poll() is None for child in children):
                time.sleep(0.5)
        finally:
            stop(signal.SIGTERM, None)
            for child in children:
                child.wait()


def web_server_command(server: str, host: str, port: int, grace_seconds: float | None = None) -> list[str]:
    """One serving process. No access log: the usage ledger and /metrics
    record every request, and a log line per request costs CPU on each.

    uvicorn's graceful timeout is the gateway's grace plus a little: streams
    still open at the grace are ended by the gateway itself, with an error
    event and their usage recorded, before uvicorn would cancel them."""
    grace = settings.GATEWAY_SHUTDOWN_GRACE_SECONDS if grace_seconds is None else grace_seconds
    if server == "daphne":
        return [sys.executable, "-m", "daphne", "-v", "1", "-b", host, "-p", str(port), "gateway.asgi:application"]
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "gateway.asgi:application",
        "--host",
        host,
        "--port",
        str(port),
        "--no-access-log",
        "--lifespan",
        "on",
        "--timeout-graceful-shutdown",
        str(math.ceil(grace) + 2),
        "--no-server-header",
        # uvicorn itself never closes a connection whose request head is
        # slow to come (a half request line is held forever), and its
        # keep-alive timeout is not configurable per setting: see below.
        *(("--http", f"{__name__}:HeadTimeoutProtocol") if _HTTPTOOLS else ()),
    ]


_HTTPTOOLS = importlib.util.find_spec("httptools") is not None
_MAX_HEAD_BYTES = 64 * 1024  # request line and headers; an LLM client sends a few hundred bytes

if _HTTPTOOLS:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HeadTimeoutProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol with a deadline for each request's
        head (GATEWAY_HEADER_TIMEOUT, from the connection or the request's
        first byte to its last header), a cap on the head's size, and
        GATEWAY_KEEP_ALIVE_TIMEOUT for idle kept-alive connections. A slow
        client (slowloris) otherwise holds a connection and its memory for
        as long as it likes. The body has its own deadline
        (PROXY_BODY_READ_TIMEOUT, gateway.handlers)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.timeout_keep_alive = settings.GATEWAY_KEEP_ALIVE_TIMEOUT
            self._head_timer: asyncio.TimerHandle | None = None
            self._head_bytes = 0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # a TCP server's is a Transport
            super().connection_made(transport)
            self._head_timer_start()

        def connection_lost(self, exc: Exception | None) -> None:
            self._head_timer_cancel()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_bytes = 0
            if self._head_timer is None:  # a later request on a kept-alive connection
                self._head_timer_start()

        def on_url(self, url: bytes) -> None:
            self._head_count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._head_count(len(name) + len(value))
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._head_timer_cancel()
            super().on_headers_complete()

        def _head_count(self, size: int) -> None:
            self._head_bytes += size
            if self._head_bytes > _MAX_HEAD_BYTES:
                # Raised through the parser: uvicorn answers 400 and closes.
                raise ValueError("request head too large")

        def _head_timer_start(self) -> None:
            self._head_timer = self.loop.call_later(settings.GATEWAY_HEADER_TIMEOUT, self._head_timed_out)

        def _head_timer_cancel(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if not self.transport.is_closing():
                self.transport.close()
