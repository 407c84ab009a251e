"""Cutting SSE into events and reading usage from them (pure)."""

import orjson

from gateway.kernel.context import Usage
from gateway.kernel.sse import SSESplitter, event_data
from proxy.providers.openai import OpenAIStreamObserver, usage_from_openai


def test_the_splitter_yields_only_complete_events_and_keeps_the_rest_for_later() -> None:
    splitter = SSESplitter()
    assert splitter.feed(b'data: {"a"') == []
    assert splitter.feed(b": 1}\n\ndata: [DO") == [b'data: {"a": 1}\n\n']
    assert splitter.feed(b"NE]\n\n") == [b"data: [DONE]\n\n"]
    assert splitter.rest() == b""


def test_the_splitter_passes_several_events_of_one_chunk_through_byte_for_byte() -> None:
    chunk = b"event: x\ndata: 1\n\ndata: 2\n\n: comment\n\n"
    assert b"".join(SSESplitter().feed(chunk)) == chunk


def test_the_splitter_accepts_crlf_line_endings() -> None:
    assert SSESplitter().feed(b"data: 1\r\n\r\ndata: 2\r\n\r\n") == [b"data: 1\n\n", b"data: 2\n\n"]


def test_event_data_joins_data_lines_and_ignores_other_fields() -> None:
    assert event_data(b'event: delta\ndata: {"x":\ndata: 1}\n\n') == b'{"x":\n1}'
    assert event_data(b"data:no-space\n\n") == b"no-space"
    assert event_data(b": keep-alive\n\n") is None


def usage_chunk(**usage: object) -> bytes:
    return orjson.dumps({"choices": [], "usage": usage})


def test_the_observer_drops_the_usage_chunk_the_client_did_not_ask_for_and_keeps_its_numbers() -> None:
    observer = OpenAIStreamObserver(client_wants_usage=False)
    assert observer.observe(orjson.dumps({"choices": [{"delta": {"content": "hello"}}], "usage": None}))
    assert observer.observe(usage_chunk(prompt_tokens=7, completion_tokens=3)) is False
    assert observer.observe(b"[DONE]") and observer.finished
    assert observer.usage == Usage(input_tokens=7, output_tokens=3)
    assert observer.output_chars == 5


def test_the_observer_keeps_the_usage_chunk_when_the_client_asked_for_it() -> None:
    observer = OpenAIStreamObserver(client_wants_usage=True)
    assert observer.observe(usage_chunk(prompt_tokens=7, completion_tokens=3)) is True


def test_the_observer_counts_tool_call_arguments_as_output() -> None:
    observer = OpenAIStreamObserver(client_wants_usage=False)
    call = {"index": 0, "function": {"name": "get", "arguments": '{"q":1}'}}
    observer.observe(orjson.dumps({"choices": [{"delta": {"tool_calls": [call]}}]}))
    assert observer.output_chars == len("get") + len('{"q":1}')


def test_the_observer_passes_on_what_it_cannot_parse() -> None:
    observer = OpenAIStreamObserver(client_wants_usage=False)
    assert observer.observe(b"{not json") is True
    assert observer.observe(b"42") is True
    assert observer.usage is None


def test_openai_usage_becomes_disjoint_buckets() -> None:
    usage = usage_from_openai(
        {
            "prompt_tokens": 100,
            "completion_tokens": 30,
            "prompt_tokens_details": {"cached_tokens": 40},
            "completion_tokens_details": {"reasoning_tokens": 10},
        }
    )
    assert usage == Usage(input_tokens=60, cached_input_tokens=40, output_tokens=20, reasoning_tokens=10)
    assert usage.total_tokens == 130


def test_nonsense_usage_numbers_never_go_negative() -> None:
    usage = usage_from_openai(
        {
            "prompt_tokens": 5,
            "completion_tokens": -3,
            "prompt_tokens_details": {"cached_tokens": 50},
            "completion_tokens_details": {"reasoning_tokens": "many"},
        }
    )
    assert usage == Usage(input_tokens=0, cached_input_tokens=5, output_tokens=0, reasoning_tokens=0)
    assert usage_from_openai(None) is None


async def test_a_relayed_stream_that_never_started_is_still_recorded_and_its_upstream_closed() -> None:
    import asyncio

    from billing.meter import meter
    from gateway.kernel.context import PriceSnapshot, ProviderConfig, Rates, RouteTarget, TenantContext
    from gateway.kernel.errors import ApiFormat
    from proxy.dialects import Dialect
    from proxy.exchange import Exchange
    from proxy.providers.base import UpstreamRequest
    from proxy.streaming import RelayResponse
    from proxy.usage import UsageRecorder

    class UpstreamResponse:
        closed = False

        def close(self) -> None:
            self.closed = True

    ctx = TenantContext(tenant_id=1, tenant_slug="t", tenant_active=True, key_id=2, key_prefix="sk-gw-x")
    target = RouteTarget(
        "m", ProviderConfig("p", "openai", "http://x"), "m", PriceSnapshot(Rates(10**9, 0, 0, 0, 0, 0))
    )
    observer = OpenAIStreamObserver(client_wants_usage=False)
    recorder = UsageRecorder(
        ctx=ctx,
        target=target,
        endpoint="chat.completions",
        dialect=Dialect.CHAT,
        request_id="req_x",
        body={"messages": [{"role": "user", "content": "abcd"}]},
        observer=observer,
    )
    upstream = UpstreamResponse()
    meter.take(meter.pending)

    exchange = Exchange(UpstreamRequest("http://x", {}, b""), observer, lambda data: None)
    RelayResponse(upstream, recorder, ApiFormat.OPENAI, exchange).close()
    await asyncio.sleep(0)  # the upstream is closed on the loop

    [event] = meter.take(meter.pending)
    assert (event.request_id, event.client_disconnected, event.usage_estimated) == ("req_x", True, True)
    assert event.usage.input_tokens == 5  # 4 characters + 4 per message, rounded up
    assert upstream.closed and meter.inflight == 0


def test_usage_of_an_unexpected_shape_is_read_without_raising() -> None:
    usage = usage_from_openai(
        {"prompt_tokens": 5, "completion_tokens": 3, "prompt_tokens_details": "n/a", "completion_tokens_details": ["x"]}
    )
    assert usage == Usage(input_tokens=5, output_tokens=3)
    observer = OpenAIStreamObserver(client_wants_usage=False)
    assert observer.observe(orjson.dumps({"choices": [{"delta": {"tool_calls": 5, "content": ["a"]}}]}))


def test_reasoning_reported_on_top_of_completion_tokens_is_billed_whole() -> None:
    usage = usage_from_openai(
        {
            "prompt_tokens": 21,
            "completion_tokens": 0,
            "total_tokens": 81,
            "completion_tokens_details": {"reasoning_tokens": 60},
        }
    )
    assert (usage.output_tokens, usage.reasoning_tokens) == (0, 60)


async def test_a_cache_fill_that_cannot_assemble_its_stream_lets_its_waiters_go_and_stores_nothing() -> None:
    import asyncio

    from cachestore.flight import Flight
    from cachestore.policy import CachePolicy
    from gateway.kernel.context import ProviderConfig, RouteTarget, TenantContext, UsageEvent
    from proxy.caching import CacheFill

    class Store:
        stored: list[object] = []

        async def set(self, entry: object) -> None:
            self.stored.append(entry)

    ctx = TenantContext(tenant_id=1, tenant_slug="t", tenant_active=True, key_id=2, key_prefix="sk-gw-x")
    target = RouteTarget("m", ProviderConfig("p", "openai", "http://x"), "m", None)
    future = asyncio.get_running_loop().create_future()
    store = Store()
    fill = CacheFill(
        ctx,
        target,
        "chat.completions",
        "k",
        CachePolicy(True, True, 60),
        Flight(tenant_id=1, key="k", future=future, store=store),
    )
    fill.add(b'data: {"choices": [{"index": 0, "delta": {"content": [{"type": "text", "text": "x"}]}}]}\n\n')
    event = UsageEvent(
        request_id="r",
        created_at=None,
        tenant_id=1,
        key_id=2,
        endpoint="chat.completions",
        public_model="m",
        upstream_model="m",
        provider="p",
        status_code=200,
        usage=Usage(),
        cost_nanos=1,
        latency_ms=1,
        stream=True,
    )

    fill.complete(None, event)  # must not raise: it runs in a stream's finally

    assert future.done() and future.result() is None
    await asyncio.sleep(0)
    assert store.stored == []
