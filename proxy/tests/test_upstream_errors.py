"""An upstream's refusal as the client sees it: its secrets redacted before
the message is cut, Anthropic's "overloaded" kept as such."""

import json

import httpx
import orjson
import pytest

from conftest import IssuedKey
from gateway.kernel.context import ProviderConfig
from gateway.kernel.logs import redact
from proxy.tests.live import LiveGateway
from proxy.upstream_errors import upstream_error_details

PROVIDER = ProviderConfig(name="up", kind="openai", base_url="http://upstream.invalid/v1")
KEY = "sk-proj-" + "A1b2C3d4E5" * 4


def upstream_message(message: str) -> str:
    raw = orjson.dumps({"error": {"message": message, "type": "invalid_request_error"}})
    return upstream_error_details(raw, PROVIDER)[0]


def test_a_key_straddling_the_message_cut_leaks_none_of_its_characters() -> None:
    # The key starts 10 characters before the 2,000-character cut.
    message = upstream_message("x" * 1990 + KEY + " more")
    assert KEY[:10] not in message
    assert "sk-proj" not in message and message.endswith("[redacted]")


def test_a_key_glued_to_the_word_before_it_is_redacted_in_upstream_messages() -> None:
    message = upstream_message(f"invalid tokensk-{KEY[3:]} given by the task-runner")
    assert KEY[3:] not in message and "[redacted]" in message
    assert message.endswith("given by the task-runner")  # short dashed words stay readable


def test_a_key_glued_to_the_word_before_it_is_redacted_in_logs() -> None:
    assert redact(f"bad tokensk-{KEY[3:]} here") == "bad tokensk-[redacted] here"


@pytest.mark.usefixtures("live_gateway")
def test_anthropics_overload_reaches_a_native_messages_client_as_a_529_overloaded_error(
    live_gateway: LiveGateway, key: IssuedKey
) -> None:
    body = {"model": "claude-error-529", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    headers = {**key.headers, "anthropic-version": "2023-06-01"}
    answer = httpx.post(live_gateway.url + "/v1/messages", json=body, headers=headers, timeout=20)
    assert answer.status_code == 529
    error = answer.json()
    assert (error["type"], error["error"]["type"]) == ("error", "overloaded_error")
    assert answer.headers["retry-after"] == "7"


@pytest.mark.usefixtures("live_gateway")
def test_anthropics_overload_reaches_an_openai_client_as_a_503(live_gateway: LiveGateway, key: IssuedKey) -> None:
    body = {"model": "claude-error-529", "messages": [{"role": "user", "content": "hi"}]}
    answer = httpx.post(live_gateway.url + "/v1/chat/completions", json=body, headers=key.headers, timeout=20)
    assert answer.status_code == 503
    error = json.loads(answer.content)["error"]
    assert (error["type"], error["code"]) == ("overloaded_error", "overloaded_error")
