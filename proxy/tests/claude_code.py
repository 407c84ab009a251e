"""Finding, installing and running the real Claude Code CLI for end-to-end tests.

The npm package `@anthropic-ai/claude-code` is a thin wrapper whose
postinstall step copies a native binary (an optional dependency such as
`@anthropic-ai/claude-code-linux-x64`, also from the npm registry) over
`bin/claude.exe`; no Node.js process stays resident. It is installed into
the user's cache folder (about 360 MB; see INSTALL_PREFIX).

Runs are offline and non-interactive: `-p` needs no onboarding or login, the
throwaway HOME/CLAUDE_CONFIG_DIR keeps the developer's own settings, sessions
and credentials out, and the environment is built from scratch so an
ANTHROPIC_API_KEY in the developer's shell cannot leak into a run.
"""

import functools
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

CLAUDE_CODE_VERSION = "2.1.329"
# Outside the checkout, so that a fresh clone on the same machine (CI) does
# not download 360 MB again; CLAUDE_CODE_PREFIX overrides it.
INSTALL_PREFIX = Path(
    os.environ.get("CLAUDE_CODE_PREFIX")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    / "llm-gateway"
    / f"claude-code-{CLAUDE_CODE_VERSION}"
)
LOCAL_BINARY = INSTALL_PREFIX / "node_modules" / ".bin" / "claude"
INSTALL_TIMEOUT_SECONDS = 300


@dataclass(frozen=True)
class ClaudeRun:
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def _works(binary: Path) -> bool:
    try:
        done = subprocess.run([str(binary), "--version"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def cli_install(timeout: float = INSTALL_TIMEOUT_SECONDS) -> Path | None:
    """One `npm install` of the pinned version into INSTALL_PREFIX; the binary, or None."""
    npm = shutil.which("npm")
    if npm is None:
        return None
    INSTALL_PREFIX.mkdir(parents=True, exist_ok=True)
    command = [
        npm,
        "install",
        "--no-audit",
        "--no-fund",
        "--prefix",
        str(INSTALL_PREFIX),
        f"@anthropic-ai/claude-code@{CLAUDE_CODE_VERSION}",
    ]
    try:
        subprocess.run(command, capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return LOCAL_BINARY if _works(LOCAL_BINARY) else None


@functools.cache
def cli_locate() -> Path | None:
    """The project-local CLI, else `claude` on PATH, else one install attempt
    (cached, so a failing install costs the session once, not once per test)."""
    if _works(LOCAL_BINARY):
        return LOCAL_BINARY
    on_path = shutil.which("claude")
    if on_path is not None and _works(Path(on_path)):
        return Path(on_path)
    return cli_install()


def cli_environment(*, base_url: str, token: str, home: Path) -> dict[str, str]:
    """Only what a gateway user would set, plus what keeps the run offline and fast."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "TERM": "dumb",
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_AUTH_TOKEN": token,  # sent as `Authorization: Bearer <token>`
        "DISABLE_TELEMETRY": "1",
        # Without it the CLI also sends `HEAD /api/hello` to the base URL first.
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        # The CLI retries 5xx, 429, 529, 401 and broken connections 10 times
        # with backoff up to ~32 s (about 3 minutes in all): a gateway bug
        # should fail the test at once instead.
        "CLAUDE_CODE_MAX_RETRIES": "0",
    }


def cli_run(
    binary: Path, *, base_url: str, token: str, model: str, prompt: str, home: Path, timeout: float = 60
) -> ClaudeRun:
    """`claude -p PROMPT --model MODEL` against base_url, from an empty working directory."""
    workdir = home / "project"  # empty: no CLAUDE.md, no git repository to describe
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    done = subprocess.run(
        [str(binary), "-p", prompt, "--model", model],
        cwd=workdir,
        env=cli_environment(base_url=base_url, token=token, home=home),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return ClaudeRun(done.returncode, done.stdout, done.stderr, time.monotonic() - started)
