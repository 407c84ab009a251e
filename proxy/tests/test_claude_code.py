"""The unmodified Claude Code CLI against the gateway under daphne.

`claude -p ... --model ROUTE` with ANTHROPIC_BASE_URL at the gateway and the
virtual key as ANTHROPIC_AUTH_TOKEN, once through an OpenAI-format upstream
(translated) and once through an Anthropic-format one (passed through).

Every request of the CLI carries its whole tool list, so the fake upstream
answers the first turn with a call of the first tool (its `{"q": "w0"}`
input fails the tool's validation in the CLI); the CLI sends that error back
as a tool result and the fake then answers its words. One run is therefore a
full tool round trip: two upstream requests, the second ending with the
tool's result. A third request would mean the CLI did not accept a stream
(it retries broken streams without streaming). The request shapes the CLI
sends are recorded in fixtures/claude_code/.
"""

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import UPSTREAM_SECRET, IssuedKey, unique_marker
from proxy.tests.claude_code import ClaudeRun, cli_locate, cli_run
from proxy.tests.fake_upstream import FakeUpstream, ReceivedRequest
from proxy.tests.live import LiveGateway

pytestmark = [pytest.mark.claude_code, pytest.mark.usefixtures("live_gateway")]

# A model id the CLI knows (so it sends what it sends to Claude: budgeted
# thinking, no system entry inside messages) and that no other test routes.
ANTHROPIC_ROUTE = "claude-sonnet-4-5-20250929"
ANTHROPIC_UPSTREAM_MODEL = "claude-up"  # priced in conftest
# Tools the CLI always sends in full (others are deferred behind ToolSearch).
CORE_TOOLS = {"Bash", "Read", "Edit", "Write"}
EPHEMERAL = {"type": "ephemeral"}


@pytest.fixture(scope="module")
def claude() -> Path:
    binary = cli_locate()
    if binary is None:
        pytest.skip("Claude Code CLI not found in var/claude-code or on PATH, and `npm install` failed")
    return binary


@pytest.fixture(scope="module")
def anthropic_route(django_db_blocker: Any, fake_upstream: FakeUpstream) -> str:
    """An Anthropic-format provider at the fake; saving it bumps the config version."""
    from proxy.services import provider_upsert, route_upsert

    with django_db_blocker.unblock():
        provider, _ = provider_upsert(
            name="claude-code-anthropic", kind="anthropic", base_url=fake_upstream.url, api_key=UPSTREAM_SECRET
        )
        route_upsert(model=ANTHROPIC_ROUTE, provider=provider, upstream_model=ANTHROPIC_UPSTREAM_MODEL)
    return ANTHROPIC_ROUTE


def wait_until_listed(gateway: LiveGateway, key: IssuedKey, model: str, timeout: float = 5.0) -> None:
    """The gateway polls the config version; wait until it serves the new route."""
    deadline = time.monotonic() + timeout
    while True:
        request = urllib.request.Request(gateway.url + "/v1/models", headers=key.headers)
        with urllib.request.urlopen(request, timeout=5) as response:
            if model in {m["id"] for m in json.load(response)["data"]}:
                return
        assert time.monotonic() < deadline, f"the gateway did not list {model} within {timeout}s"
        time.sleep(0.1)


def run_claude(claude: Path, gateway: LiveGateway, key: IssuedKey, model: str, marker: str, home: Path) -> ClaudeRun:
    run = cli_run(
        claude,
        base_url=gateway.url,
        token=key.plaintext,
        model=model,
        prompt=f"Reply with the word hello ({marker})",
        home=home,
    )
    assert run.returncode == 0, f"claude exited {run.returncode}:\n{run.stdout}\n{run.stderr}\n{gateway.log()[-3000:]}"
    return run


def requests_with(fake: FakeUpstream, marker: str) -> list[ReceivedRequest]:
    return [r for r in fake.requests if marker in json.dumps(r.body)]


def header(request: ReceivedRequest, name: str) -> str | None:
    return next((v for k, v in request.headers.items() if k.lower() == name.lower()), None)


def assert_credentials(request: ReceivedRequest, key: IssuedKey, *, bearer: bool) -> None:
    if bearer:
        assert header(request, "Authorization") == f"Bearer {UPSTREAM_SECRET}"
    else:
        assert UPSTREAM_SECRET in (header(request, "x-api-key"), (header(request, "Authorization") or "")[7:])
    assert key.plaintext not in json.dumps(request.headers)  # the virtual key never leaves the gateway


def test_claude_code_through_an_openai_format_upstream_prints_the_answer_after_a_translated_tool_round_trip(
    claude: Path, live_gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    marker = unique_marker()
    run = run_claude(claude, live_gateway, key, "gpt-test", marker, tmp_path)

    assert run.stdout.strip() == " ".join(fake_upstream.words)
    first, second = requests_with(fake_upstream, marker)  # exactly two: no retry, no non-streaming fallback
    for request in (first, second):
        assert request.path == "/v1/chat/completions"
        assert_credentials(request, key, bearer=True)
        body = request.body
        assert body["model"] == "gpt-up"
        assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
        assert body["max_tokens"] == 32000
        # Anthropic-only fields and block markup do not reach an OpenAI upstream.
        assert not {"system", "thinking", "context_management", "output_config", "metadata"} & body.keys()
        assert "cache_control" not in json.dumps(body) and "defer_loading" not in json.dumps(body)
        assert all(t["type"] == "function" and t["function"]["parameters"]["type"] == "object" for t in body["tools"])
        assert CORE_TOOLS <= {t["function"]["name"] for t in body["tools"]}
        # The CLI sends this unknown model a {"role": "system"} entry inside
        # messages; it joins the top-level system prompt in one system message.
        assert body["messages"][0]["role"] == "system"
        assert "Claude Agent SDK" in body["messages"][0]["content"]
        assert "# Environment" in body["messages"][0]["content"]
        assert [m["role"] for m in body["messages"]].count("system") == 1
    assert [m["role"] for m in first.body["messages"]] == ["system", "user"]
    assert marker in json.dumps(first.body["messages"][1])
    assert [m["role"] for m in second.body["messages"]] == ["system", "user", "assistant", "tool"]
    call = second.body["messages"][2]["tool_calls"][0]
    assert call["function"]["name"] == first.body["tools"][0]["function"]["name"]
    assert json.loads(call["function"]["arguments"]) == {"q": "w0"}
    result = second.body["messages"][3]
    assert result["tool_call_id"] == call["id"]
    assert "InputValidationError" in json.dumps(result["content"])


def test_claude_code_through_an_anthropic_format_upstream_passes_its_request_through(
    claude: Path,
    live_gateway: LiveGateway,
    issue_key: Callable[..., IssuedKey],
    fake_upstream: FakeUpstream,
    anthropic_route: str,
    tmp_path: Path,
) -> None:
    key = issue_key()
    wait_until_listed(live_gateway, key, anthropic_route)
    marker = unique_marker()
    run = run_claude(claude, live_gateway, key, anthropic_route, marker, tmp_path)

    assert run.stdout.strip() == " ".join(fake_upstream.words)
    first, second = requests_with(fake_upstream, marker)  # exactly two: no retry, no non-streaming fallback
    for request in (first, second):
        assert request.path == "/v1/messages"
        assert_credentials(request, key, bearer=False)
        assert header(request, "anthropic-version") == "2023-06-01"
        # context_management is refused by the real API without its beta.
        betas = (header(request, "anthropic-beta") or "").split(",")
        assert {"claude-code-20250219", "context-management-2025-06-27"} <= set(betas)
        body = request.body
        assert body["model"] == ANTHROPIC_UPSTREAM_MODEL
        assert body["stream"] is True and body["max_tokens"] == 32000
        assert body["thinking"] == {"type": "enabled", "budget_tokens": 31999, "display": "omitted"}
        assert body["context_management"] == {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]}
        assert json.loads(body["metadata"]["user_id"]).keys() == {"device_id", "account_uuid", "session_id"}
        # The billing-header block, then the two cached prompt blocks.
        assert [block.get("cache_control") for block in body["system"]] == [None, EPHEMERAL, EPHEMERAL]
        assert CORE_TOOLS <= {t["name"] for t in body["tools"]}
        assert all("input_schema" in t for t in body["tools"])
    assert [m["role"] for m in first.body["messages"]] == ["user"]
    assert first.body["messages"][0]["content"][-1] == {
        "type": "text",
        "text": f"Reply with the word hello ({marker})",
        "cache_control": EPHEMERAL,
    }
    assert [m["role"] for m in second.body["messages"]] == ["user", "assistant", "user"]
    assert second.body["messages"][1]["content"] == [
        {"type": "tool_use", "id": "toolu_fake", "name": first.body["tools"][0]["name"], "input": {"q": "w0"}}
    ]
    (result,) = second.body["messages"][2]["content"]
    assert result["type"] == "tool_result" and result["tool_use_id"] == "toolu_fake" and result["is_error"] is True
