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


def web_server_command(server: str, host: str, port: int) -> list[str]:
    """One serving process. No access log: the usage ledger and /metrics
    record every request, and a log line per request costs CPU on each."""
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
        "20",
        "--no-server-header",
    ]
