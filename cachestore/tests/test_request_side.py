"""Cache keys, the client's Cache-Control, and replaying answers (pure)."""

import orjson
import pytest

from cachestore.entry import CachedEntry, entry_dumps, entry_loads
from cachestore.keys import cache_key
from cachestore.policy import CachePolicy, cache_policy
from cachestore.replay import completion_from_events, events_from_completion, recorded_events
from gateway.kernel.context import Usage
from proxy.tests.fake_upstream import FakeUpstream

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.5}


def key(tenant_id: int = 1, body: dict | None = None, upstream_model: str = "up") -> str:
    return cache_key(
        tenant_id=tenant_id,
        endpoint="chat.completions",
        provider="p",
        upstream_model=upstream_model,
        body=body if body is not None else BODY,
    )


def test_key_order_whitespace_and_answer_neutral_fields_do_not_change_the_key() -> None:
    shuffled = orjson.loads(b'{ "temperature":0.5,\n "messages":[{"content":"hi","role":"user"}], "model":"other" }')
    assert key(body=shuffled) == key()
    assert key(body={**BODY, "user": "u-1", "stream": True, "stream_options": {"include_usage": True}}) == key()


def test_anything_that_changes_the_answer_changes_the_key() -> None:
    assert key(body={**BODY, "temperature": 0.6}) != key()
    assert key(body={**BODY, "messages": [{"role": "user", "content": "hi!"}]}) != key()
    assert key(upstream_model="up-2") != key()  # a re-pointed route never answers from the old model


def test_two_tenants_never_share_a_key() -> None:
    assert key(tenant_id=1) != key(tenant_id=2)


@pytest.mark.parametrize(
    ("ttl", "header", "forced", "expected"),
    [
        (0, "", False, None),
        (0, "", True, CachePolicy(lookup=True, write=True, ttl_seconds=3600)),
        (60, "", False, CachePolicy(lookup=True, write=True, ttl_seconds=60)),
        (60, "no-cache", False, CachePolicy(lookup=False, write=True, ttl_seconds=60)),
        (60, "no-store", False, CachePolicy(lookup=True, write=False, ttl_seconds=60)),
        (60, "No-Cache, no-store", False, None),
        (60, "max-age=5", False, CachePolicy(lookup=True, write=True, ttl_seconds=60, max_age=5.0)),
        (60, "max-age=banana", False, CachePolicy(lookup=True, write=True, ttl_seconds=60)),
    ],
)
def test_the_policy_follows_the_key_and_cache_control(
    ttl: int, header: str, forced: bool, expected: CachePolicy | None
) -> None:
    assert cache_policy(key_ttl_seconds=ttl, cache_control=header, forced=forced, default_ttl=3600) == expected


FAKE = FakeUpstream(words=("Hello", "cached", "world"))


def test_a_recorded_stream_becomes_the_same_answer_a_json_client_gets() -> None:
    events = FAKE.stream_events("m", include_usage=True)
    completion = completion_from_events(events)
    direct = FAKE.completion("m")
    assert completion["choices"][0]["message"] == direct["choices"][0]["message"]
    assert completion["choices"][0]["finish_reason"] == "stop"
    assert completion["usage"] == direct["usage"]
    assert (completion["id"], completion["model"], completion["object"]) == ("chatcmpl-fake", "m", "chat.completion")


def test_a_json_answer_becomes_a_valid_stream_with_the_same_content() -> None:
    events = events_from_completion(FAKE.completion("m"), include_usage=False)
    assert events[-1] == b"data: [DONE]\n\n"
    assert completion_from_events(events)["choices"][0]["message"]["content"] == "Hello cached world"
    assert all(b'"usage"' not in e for e in events)
    with_usage = events_from_completion(FAKE.completion("m"), include_usage=True)
    assert orjson.loads(with_usage[-2][6:])["usage"]["completion_tokens"] == 3


def test_tool_calls_survive_both_ways() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "x"}'}}
    completion = {
        "id": "c",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {"role": "assistant", "content": None, "tool_calls": [call]},
            }
        ],
    }
    back = completion_from_events(events_from_completion(completion, include_usage=False))
    assert back["choices"][0]["message"]["tool_calls"] == [call]
    assert back["choices"][0]["finish_reason"] == "tool_calls"


def test_replaying_a_recorded_stream_drops_the_usage_chunk_unless_asked() -> None:
    events = FAKE.stream_events("m", include_usage=True)
    assert recorded_events(events, include_usage=True) == events
    assert recorded_events(events, include_usage=False) == [e for e in events if b'"choices":[]' not in e]


def test_an_entry_survives_the_trip_through_bytes_and_large_ones_are_compressed() -> None:
    entry = CachedEntry(
        tenant_id=1,
        key="k",
        endpoint="chat.completions",
        model="m",
        body=b'{"a": 1}',
        usage=Usage(input_tokens=3, output_tokens=4),
        cost_nanos=99,
        created_at=1.5,
        expires_at=2.5,
        events=(b"data: 1\n\n",),
        price_id=7,
    )
    assert entry_loads(entry_dumps(entry)) == entry
    big = CachedEntry(**{**entry.__dict__, "body": b'"' + b"x" * 5000 + b'"'})
    raw = entry_dumps(big)
    assert raw[:1] == b"z" and len(raw) < 500
    assert entry_loads(raw) == big
