"""The response cache through the gateway under daphne, counting upstream calls.

On the default run the gateway caches in the database; on the PostgreSQL +
Redis run, in Redis. The assertions are the same.
"""

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Callable

import aiohttp
import openai
import pytest

from conftest import IssuedKey, Ledger, unique_marker
from proxy.tests.fake_upstream import DEFAULT_WORDS, FakeUpstream
from proxy.tests.live import LiveGateway

pytestmark = pytest.mark.usefixtures("live_gateway")
ANSWER = " ".join(DEFAULT_WORDS)


@pytest.fixture
def cached_key(issue_key: Callable[..., IssuedKey]) -> IssuedKey:
    return issue_key(cache_ttl_seconds=600)


def chat(
    gateway: LiveGateway,
    key: IssuedKey,
    marker: str,
    *,
    path: str = "/v1/chat/completions",
    stream: bool = False,
    model: str = "gpt-test",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": marker}]}
    request = urllib.request.Request(
        gateway.url + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **key.headers, **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def upstream_calls(fake: FakeUpstream, marker: str) -> int:
    return sum(marker in str(r.body.get("messages")) for r in fake.requests)


def streamed_text(raw: bytes) -> str:
    parts = []
    for line in raw.split(b"\n"):
        if line.startswith(b"data: ") and line != b"data: [DONE]":
            for choice in json.loads(line[6:]).get("choices") or ():
                parts.append(choice.get("delta", {}).get("content") or "")
    return "".join(parts)


def test_a_second_identical_request_is_served_from_the_cache_and_billed_at_zero(
    live_gateway: LiveGateway, cached_key: IssuedKey, fake_upstream: FakeUpstream, ledger: Ledger
) -> None:
    marker = unique_marker()
    first = chat(live_gateway, cached_key, marker)
    second = chat(live_gateway, cached_key, marker)
    assert (first[0], first[1]["x-cache"], second[0], second[1]["x-cache"]) == (200, "miss", 200, "hit")
    assert second[2] == first[2]  # the same bytes
    assert upstream_calls(fake_upstream, marker) == 1
    miss, hit = ledger.wait(cached_key.key_id, 2)
    assert (miss.cache_status, miss.cache_hit, miss.cost_nanos) == ("miss", False, 13_800)
    assert (hit.cache_status, hit.cache_hit, hit.cost_nanos, hit.saved_nanos) == ("hit", True, 0, 13_800)
    assert hit.input_tokens == hit.output_tokens == 0


def test_the_same_request_from_another_tenant_misses(
    live_gateway: LiveGateway, issue_key: Callable[..., IssuedKey], fake_upstream: FakeUpstream
) -> None:
    marker = unique_marker()
    one, other = issue_key(cache_ttl_seconds=600), issue_key(cache_ttl_seconds=600)
    assert chat(live_gateway, one, marker)[1]["x-cache"] == "miss"
    assert chat(live_gateway, other, marker)[1]["x-cache"] == "miss"
    assert upstream_calls(fake_upstream, marker) == 2


def test_a_streamed_answer_is_replayed_as_one_json_body_and_as_the_same_stream(
    live_gateway: LiveGateway, cached_key: IssuedKey, fake_upstream: FakeUpstream
) -> None:
    marker = unique_marker()
    streamed = chat(live_gateway, cached_key, marker, stream=True)
    as_json = chat(live_gateway, cached_key, marker)
    again = chat(live_gateway, cached_key, marker, stream=True)
    assert (streamed[1]["x-cache"], as_json[1]["x-cache"], again[1]["x-cache"]) == ("miss", "hit", "hit")
    assert streamed_text(streamed[2]) == ANSWER
    completion = json.loads(as_json[2])
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0]["message"]["content"] == ANSWER
    assert completion["choices"][0]["finish_reason"] == "stop"
    assert again[2] == streamed[2]  # the recorded events, usage chunk still dropped
    assert upstream_calls(fake_upstream, marker) == 1


def test_a_json_answer_is_replayed_as_a_valid_stream_the_sdk_reads(
    live_gateway: LiveGateway, cached_key: IssuedKey, fake_upstream: FakeUpstream
) -> None:
    marker = unique_marker()
    client = openai.OpenAI(base_url=live_gateway.url + "/v1", api_key=cached_key.plaintext, max_retries=0)
    messages = [{"role": "user", "content": marker}]
    answer = client.chat.completions.create(model="gpt-test", messages=messages)
    chunks = list(
        client.chat.completions.create(
            model="gpt-test",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == answer.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == len(DEFAULT_WORDS)
    assert upstream_calls(fake_upstream, marker) == 1


def test_twenty_identical_concurrent_requests_reach_the_upstream_once(
    live_gateway: LiveGateway, cached_key: IssuedKey, fake_upstream: FakeUpstream, ledger: Ledger
) -> None:
    marker = unique_marker()
    body = {"model": "fake/fake-slow", "stream": True, "messages": [{"role": "user", "content": marker}]}

    async def one(session: aiohttp.ClientSession) -> tuple[str, str]:
        async with session.post(live_gateway.url + "/v1/chat/completions", json=body, headers=cached_key.headers) as r:
            return r.headers["x-cache"], streamed_text(await r.read())

    async def burst() -> list[tuple[str, str]]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            return await asyncio.gather(*(one(session) for _ in range(20)))

    results = asyncio.run(burst())
    assert upstream_calls(fake_upstream, marker) == 1
    assert sorted(status for status, _ in results) == ["hit"] * 19 + ["miss"]
    assert {text for _, text in results} == {ANSWER}
    records = ledger.wait(cached_key.key_id, 20)
    assert sum(r.cache_hit for r in records) == 19


@pytest.mark.parametrize("model", ["fake/fake-error-500", "dead-model"])
def test_errors_are_never_stored(
    live_gateway: LiveGateway, cached_key: IssuedKey, fake_upstream: FakeUpstream, model: str
) -> None:
    marker = unique_marker()
    first, second = (
        chat(live_gateway, cached_key, marker, model=model),
        chat(live_gateway, cached_key, marker, model=model),
    )
    assert first[0] >= 500 and second[0] >= 500
    if model.startswith("fake/"):
        assert upstream_calls(fake_upstream, marker) == 2


def test_a_stream_cut_off_by_the_client_is_never_stored(
    live_gateway: LiveGateway, cached_key: IssuedKey, fake_upstream: FakeUpstream
) -> None:
    marker = unique_marker()
    client = openai.OpenAI(base_url=live_gateway.url + "/v1", api_key=cached_key.plaintext, max_retries=0)
    messages = [{"role": "user", "content": marker}]
    stream = client.chat.completions.create(model="fake/fake-slow", messages=messages, stream=True)
    next(iter(stream))
    stream.close()
    assert fake_upstream.wait_for_disconnects(1)
    status, headers, _ = chat(live_gateway, cached_key, marker, model="fake/fake-slow", stream=True)
    assert (status, headers["x-cache"]) == (200, "miss")
    assert upstream_calls(fake_upstream, marker) == 2


def test_cache_control_no_store_and_no_cache_are_honoured(
    live_gateway: LiveGateway, cached_key: IssuedKey, fake_upstream: FakeUpstream
) -> None:
    marker = unique_marker()
    assert chat(live_gateway, cached_key, marker, headers={"Cache-Control": "no-store"})[1]["x-cache"] == "miss"
    assert chat(live_gateway, cached_key, marker)[1]["x-cache"] == "miss"  # nothing was stored
    assert chat(live_gateway, cached_key, marker)[1]["x-cache"] == "hit"
    assert chat(live_gateway, cached_key, marker, headers={"Cache-Control": "no-cache"})[1]["x-cache"] == "bypass"
    assert chat(live_gateway, cached_key, marker, headers={"Cache-Control": "max-age=0"})[1]["x-cache"] == "miss"
    assert upstream_calls(fake_upstream, marker) == 4


def test_keys_without_a_cache_bypass_it_but_the_cache_paths_always_use_it(
    live_gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream
) -> None:
    marker = unique_marker()
    assert chat(live_gateway, key, marker)[1]["x-cache"] == "bypass"
    assert chat(live_gateway, key, marker, path="/cache/chat/completions")[1]["x-cache"] == "miss"
    hit = chat(live_gateway, key, marker, path="/cache/v1/chat/completions")
    assert (hit[0], hit[1]["x-cache"]) == (200, "hit")
    assert upstream_calls(fake_upstream, marker) == 2
    bad = chat(live_gateway, IssuedKey("sk-gw-nope", 0, 0), marker, path="/cache/chat/completions")
    assert (bad[0], json.loads(bad[2])["error"]["code"]) == (401, "invalid_api_key")
