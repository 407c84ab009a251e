"""Running the real gateway under daphne (or uvicorn), in a subprocess, on the test database."""

import os
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import connection

from gateway.management.commands.serve import web_server_command

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_database_url() -> str:
    """DATABASE_URL of the database pytest-django created for this session."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or ""
    auth = f"{user}:{db['PASSWORD']}@" if db.get("PASSWORD") else (f"{user}@" if user else "")
    return f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


_RUNNING: list["LiveGateway"] = []  # started and not yet terminated, for usage_settled()


def usage_settled() -> bool:
    """True once every running gateway (and this process's meter) has stored
    every usage event it holds and has no request whose usage is unknown."""
    from billing.meter import meter

    return meter.pending == 0 and meter.inflight == 0 and all(g.meter_idle() for g in list(_RUNNING))


@dataclass
class LiveGateway:
    """daphne (or uvicorn, the production server) serving gateway.asgi:application on a free port."""

    env: dict[str, str] = field(default_factory=dict)
    server: str = "daphne"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "LiveGateway":
        settings.VAR_DIR.mkdir(exist_ok=True)
        self.log_path = settings.VAR_DIR / f"test-{self.server}-{self.port}.log"
        env = {
            **os.environ,
            "DATABASE_URL": test_database_url(),
            "BILLING_METER_FLUSH_SECONDS": "0.1",
            "GATEWAY_CONFIG_POLL_SECONDS": "0.2",
            "PROXY_READ_TIMEOUT": "2",
            "PROXY_MAX_BODY_BYTES": str(1024 * 1024),
            "GATEWAY_SHUTDOWN_GRACE_SECONDS": "10",
            # Many tests call the error models on purpose; the breaker's own
            # tests start a gateway with a low threshold.
            "PROXY_BREAKER_FAILURES": "1000000",
            **self.env,
        }
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                web_server_command(self.server, "127.0.0.1", self.port, float(env["GATEWAY_SHUTDOWN_GRACE_SECONDS"])),
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_ready()
        _RUNNING.append(self)
        return self

    def meter_idle(self) -> bool:
        """Its /metrics says no usage event is waiting or being written and no
        request is still open (a gateway that has exited holds nothing)."""
        if self.process is None or self.process.poll() is not None:
            return True
        token = self.env.get("METRICS_TOKEN", os.environ.get("METRICS_TOKEN", ""))
        request = urllib.request.Request(self.url + "/metrics")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                text = response.read().decode()
        except OSError:
            return False
        return _gauge(text, "gateway_usage_queue_depth") == 0 == _gauge(text, "gateway_requests_in_flight")

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.server} exited at start:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.server} did not start in {timeout}s:\n{self.log()}")

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM, as an orchestrator would; returns the exit code."""
        assert self.process is not None
        if self in _RUNNING:
            _RUNNING.remove(self)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""


def _gauge(exposition: str, name: str) -> float | None:
    for line in exposition.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None
