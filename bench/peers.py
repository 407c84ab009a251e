"""Peer gateways to compare against: the LiteLLM proxy and the Portkey gateway.

Each is installed at run time into the user's cache folder, never into the
checkout or the project's virtualenv, once per pinned version (a marker file
records a finished install), and started like our own gateway: pinned to the
gateway's CPU with stack.pinned and run by stack.Server, so its CPU time is
read from /proc the same way. Both serve from the one process we start (no
worker is forked: LiteLLM runs uvicorn in-process with one worker, Portkey is
a single node process), so Server.cpu_seconds sees all the serving work;
litellm_start checks that this stays true.

Both are pointed at the benchmark's fake upstream and answer
POST /v1/chat/completions; a Peer says which model to ask for and which
headers to send.
"""

import http.client
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from bench import stack

# The newest 1.106.* that installs from the package index as published:
# 1.106.3 to 1.106.10 require certifi>=2026.10.19, which the index does not have.
LITELLM_VERSION = "1.106.2"
PORTKEY_VERSION = "1.15.2"  # the newest 1.15.*
# As in Portkey's own lockfile: the newer hono and @hono/node-server that a
# plain install resolves make every streamed answer a 500 ("TypeError: immutable").
PORTKEY_OVERRIDES = {"hono": "4.9.7", "@hono/node-server": "1.13.5"}

LITELLM = "litellm"
PORTKEY = "portkey"

CACHE_ROOT = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llm-gateway" / "bench-peers"
LITELLM_PREFIX = CACHE_ROOT / f"litellm-{LITELLM_VERSION}"
PORTKEY_PREFIX = CACHE_ROOT / f"portkey-{PORTKEY_VERSION}"
PORTKEY_ENTRY = PORTKEY_PREFIX / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
# Written last, holding what was installed: a half-done or outdated install is redone.
INSTALLED_MARKER = ".bench-installed"
INSTALL_TIMEOUT_SECONDS = 900.0

CHAT_PATH = "/v1/chat/completions"
UPSTREAM_API_KEY = "sk-fake"
LITELLM_MASTER_KEY = "sk-bench-master"  # LiteLLM requires master keys to start with "sk-"
# LiteLLM imports for several seconds before it listens (about 8 s on an idle core).
LITELLM_READY_TIMEOUT_SECONDS = 90.0
PORTKEY_READY_TIMEOUT_SECONDS = 30.0
READY_POLL_SECONDS = 0.25
READY_REQUEST_TIMEOUT_SECONDS = 5.0
LOG_TAIL_LINES = 40
# Passed through to the peers; everything else (DATABASE_URL, REDIS_URL, proxy
# settings, API keys) stays out, so nothing from the developer's shell turns on
# a database, a cache or a detour that our own gateway does not have.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")


@dataclass(frozen=True)
class Peer:
    """A running peer gateway: load it with POST {server.url}/v1/chat/completions.

    model is the model name to put in the request body, headers the extra
    request headers it needs (authentication, routing; not Content-Type).
    """

    name: str
    server: stack.Server
    model: str
    headers: dict[str, str]

    @property
    def url(self) -> str:
        """The chat completions URL."""
        return self.server.url + CHAT_PATH


def peers_available() -> dict[str, str]:
    """Peers that cannot run on this machine, by id (LITELLM, PORTKEY), with the reason; empty if both can.

    Only the prerequisites are checked (nothing is installed): an install can
    still fail, and then raises RuntimeError with its output.
    """
    missing: dict[str, str] = {}
    if not _base_python().exists():
        missing[LITELLM] = f"no Python interpreter at {_base_python()} to create its virtualenv"
    if shutil.which("node") is None or shutil.which("npm") is None:
        missing[PORTKEY] = "node and npm are needed on PATH"
    return missing


def litellm_install() -> Path:
    """The `litellm` command of a virtualenv holding litellm[proxy]==LITELLM_VERSION, installed once.

    The virtualenv lives under CACHE_ROOT, apart from the project's own.
    Raises RuntimeError with the installer's output if the install fails.
    """
    command = LITELLM_PREFIX / "bin" / "litellm"
    spec = f"litellm[proxy]=={LITELLM_VERSION}"
    if _installed(LITELLM_PREFIX, spec) and command.exists():
        return command
    _install_run([str(_base_python()), "-m", "venv", "--clear", str(LITELLM_PREFIX)])
    python = LITELLM_PREFIX / "bin" / "python"
    _install_run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", spec])
    _installed_mark(LITELLM_PREFIX, spec)
    return command


def portkey_install() -> Path:
    """The folder holding @portkey-ai/gateway@PORTKEY_VERSION with PORTKEY_OVERRIDES, installed once.

    Raises RuntimeError with npm's output if the install fails, or if npm did
    not install the overridden versions (streaming would then fail).
    """
    package = _portkey_package_json()
    spec = json.dumps(package, sort_keys=True)
    if _installed(PORTKEY_PREFIX, spec) and PORTKEY_ENTRY.exists():
        return PORTKEY_PREFIX
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not on PATH: cannot install the Portkey gateway")
    shutil.rmtree(PORTKEY_PREFIX / "node_modules", ignore_errors=True)
    PORTKEY_PREFIX.mkdir(parents=True, exist_ok=True)
    (PORTKEY_PREFIX / "package.json").write_text(json.dumps(package, indent=2) + "\n")
    # --ignore-scripts: the only script is a postinstall running patch-package,
    # and the patches it would apply are not shipped in the published package.
    _install_run([npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", "--omit=dev"], cwd=PORTKEY_PREFIX)
    _portkey_overrides_check()
    _installed_mark(PORTKEY_PREFIX, spec)
    return PORTKEY_PREFIX


def litellm_start(workdir: Path, upstream: stack.Server) -> Peer:
    """The LiteLLM proxy (installed if need be), one uvicorn worker, routing "bench-model" to the upstream.

    No database, a master key, LITELLM_MODE=PRODUCTION (no .env loading),
    the bundled model cost map (no download at start) and LITELLM_LOG=ERROR,
    which also sets uvicorn's log level so no access line is written per
    request. Returns once a real chat request answers 200; raises
    RuntimeError with the log's tail otherwise (the process is stopped).
    """
    command = litellm_install()
    config = workdir / "litellm-config.yaml"
    config.write_text(_litellm_config(upstream))
    port = stack.free_port()
    env = _peer_env(LITELLM_MODE="PRODUCTION", LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR")
    argv = stack.pinned(
        stack.GATEWAY_CPU,
        [str(command), "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
    )
    server = stack.Server.start(f"LiteLLM {LITELLM_VERSION}", argv, port, env, workdir / "litellm.log")
    peer = Peer(
        name=server.name,
        server=server,
        model=stack.PUBLIC_MODEL,
        headers={"Authorization": f"Bearer {LITELLM_MASTER_KEY}"},
    )
    _wait_ready(peer, LITELLM_READY_TIMEOUT_SECONDS)
    _serves_alone_check(peer)
    return peer


def portkey_start(workdir: Path, upstream: stack.Server) -> Peer:
    """The Portkey gateway (installed if need be) as one node process; routing is per request, in headers.

    NODE_ENV=production and --headless leave out the web console and its log
    stream. Returns once a real chat request answers 200; raises
    RuntimeError with the log's tail otherwise (the process is stopped).
    """
    portkey_install()
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not on PATH: cannot start the Portkey gateway")
    port = stack.free_port()
    # node itself, not npm or npx: the pid we hold must be the serving process.
    # The gateway takes only --port=N (no host option: it listens on all interfaces).
    argv = stack.pinned(stack.GATEWAY_CPU, [node, str(PORTKEY_ENTRY), f"--port={port}", "--headless"])
    env = _peer_env(NODE_ENV="production")
    server = stack.Server.start(f"Portkey {PORTKEY_VERSION}", argv, port, env, workdir / "portkey.log")
    headers = {
        "x-portkey-provider": "openai",
        "x-portkey-custom-host": f"{upstream.url}/v1",
        "Authorization": f"Bearer {UPSTREAM_API_KEY}",
    }
    peer = Peer(name=server.name, server=server, model=stack.UPSTREAM_MODEL, headers=headers)
    _wait_ready(peer, PORTKEY_READY_TIMEOUT_SECONDS)
    return peer


def process_children(pid: int) -> list[int]:
    """The pids of the process's direct children, found by scanning /proc (not every kernel has .../children)."""
    children: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # it ended meanwhile
            continue
        # The parent's pid is the second field after the command name, which may contain spaces or ')'.
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
            children.append(int(entry.name))
    return children


def _base_python() -> Path:
    """The interpreter behind the running one (not the project's virtualenv), to create a fresh one."""
    return Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"


def _installed(prefix: Path, spec: str) -> bool:
    marker = prefix / INSTALLED_MARKER
    return marker.exists() and marker.read_text() == spec


def _installed_mark(prefix: Path, spec: str) -> None:
    (prefix / INSTALLED_MARKER).write_text(spec)


def _install_run(command: list[str], cwd: Path | None = None) -> None:
    try:
        result = subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_SECONDS, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{' '.join(command)} took over {INSTALL_TIMEOUT_SECONDS:.0f}s") from exc
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}")


def _portkey_package_json() -> dict[str, object]:
    return {
        "name": "bench-peer-portkey",
        "private": True,
        "dependencies": {"@portkey-ai/gateway": PORTKEY_VERSION},
        "overrides": PORTKEY_OVERRIDES,
    }


def _portkey_overrides_check() -> None:
    """npm ignores an override it cannot apply without a word: check what landed."""
    for name, wanted in PORTKEY_OVERRIDES.items():
        installed = json.loads((PORTKEY_PREFIX / "node_modules" / name / "package.json").read_text())["version"]
        if installed != wanted:
            raise RuntimeError(f"npm installed {name} {installed}, not {wanted}: Portkey's streaming would break")


def _litellm_config(upstream: stack.Server) -> str:
    return (
        "model_list:\n"
        f"  - model_name: {stack.PUBLIC_MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{stack.UPSTREAM_MODEL}\n"
        f"      api_base: {upstream.url}/v1\n"
        f"      api_key: {UPSTREAM_API_KEY}\n"
        "general_settings:\n"
        f"  master_key: {LITELLM_MASTER_KEY}\n"
    )


def _peer_env(**settings: str) -> dict[str, str]:
    env = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
    env.update(settings)
    return env


def _wait_ready(peer: Peer, timeout: float) -> None:
    """Until a real chat request answers 200: listening is not enough (LiteLLM loads its router after)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if peer.server.process.poll() is not None:
            _fail(peer, "exited at start")
        if _answers_chat(peer):
            return
        time.sleep(READY_POLL_SECONDS)
    _fail(peer, f"did not answer a chat request in {timeout:.0f}s")


def _answers_chat(peer: Peer) -> bool:
    body = json.dumps({"model": peer.model, "messages": [{"role": "user", "content": "hello"}]}).encode()
    request = urllib.request.Request(
        peer.url, data=body, method="POST", headers={"Content-Type": "application/json", **peer.headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=READY_REQUEST_TIMEOUT_SECONDS) as response:
            response.read()
            return bool(response.status == 200)
    except (OSError, http.client.HTTPException):  # refused while starting, an error answer, a cut connection
        return False


def _serves_alone_check(peer: Peer) -> None:
    """A forked worker would do the serving where Server.cpu_seconds does not look."""
    if children := process_children(peer.server.process.pid):
        _fail(peer, f"forked child processes {children}: its CPU time would be undercounted")


def _fail(peer: Peer, what: str) -> NoReturn:
    peer.server.terminate()
    tail = "\n".join(peer.server.log().splitlines()[-LOG_TAIL_LINES:])
    raise RuntimeError(f"{peer.name} {what}; the end of its log:\n{tail}")
