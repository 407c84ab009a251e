"""OpenTelemetry traces, checked at a real OTLP/HTTP receiver.

The receiver is an aiohttp server in a thread of the test process that
decodes what the gateway's exporter posts to /v1/traces
(ExportTraceServiceRequest protobuf). The gateway runs under daphne in a
subprocess with the standard OTEL_* variables pointing at it; what it sent
upstream is read from the fake upstream's request log.
"""

import asyncio
import gzip
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from conftest import IssuedKey, unique_marker
from gateway.kernel.context import Usage
from proxy import telemetry, telemetry_genai
from proxy.tests.fake_upstream import FakeUpstream, ReceivedRequest
from proxy.tests.live import ROOT, LiveGateway
from proxy.tests.test_hot_path_imports import imports, request_path

SECRET = "sk-promptsecret1234567890"
SERVER, CLIENT = SpanProto.SPAN_KIND_SERVER, SpanProto.SPAN_KIND_CLIENT
ERROR = Status.STATUS_CODE_ERROR
RETRY_ROUTE = f"otel-{uuid.uuid4().hex[:6]}-retry"


# --- the receiver -------------------------------------------------------------------
@dataclass
class ExportedSpan:
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    start_ns: int
    end_ns: int
    status: int
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    resource: dict[str, Any]


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


@dataclass
class OtlpReceiver:
    """POST /v1/traces as a collector serves it, keeping every span."""

    port: int = 0
    spans: list[ExportedSpan] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        export = ExportTraceServiceRequest()
        export.ParseFromString(raw)
        self.headers.append(dict(request.headers))
        for resource_spans in export.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        ExportedSpan(
                            name=span.name,
                            kind=span.kind,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                            status=span.status.code,
                            attributes=_attributes(span.attributes),
                            events=[(e.name, _attributes(e.attributes)) for e in span.events],
                            resource=resource,
                        )
                    )
        body = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=body, content_type="application/x-protobuf")

    def start(self) -> "OtlpReceiver":
        sock = socket.socket()
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        ready = threading.Event()

        def serve() -> None:
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_post("/v1/traces", self.handle)
            self._loop = asyncio.new_event_loop()
            self._runner = web.AppRunner(app, access_log=None)
            self._loop.run_until_complete(self._runner.setup())
            self._loop.run_until_complete(web.SockSite(self._runner, sock).start())
            ready.set()
            self._loop.run_forever()

        threading.Thread(target=serve, name="otlp-receiver", daemon=True).start()
        assert ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)

    def trace(self, request_id: str, *, spans: int, timeout: float = 15.0) -> list[ExportedSpan]:
        """The spans of the trace whose server span has this request id, once
        `spans` of them have arrived (each ends, and is exported, on its own)."""
        deadline = time.monotonic() + timeout
        found: list[ExportedSpan] = []
        while time.monotonic() < deadline:
            roots = [s for s in list(self.spans) if s.attributes.get("gateway.request.id") == request_id]
            if roots:
                found = [s for s in list(self.spans) if s.trace_id == roots[0].trace_id]
                if len(found) >= spans:
                    return found
            time.sleep(0.02)
        raise AssertionError(f"{len(found)} of {spans} spans for {request_id} arrived: {[s.name for s in found]}")


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    otlp = OtlpReceiver().start()
    yield otlp
    otlp.stop()


def otel_env(receiver: OtlpReceiver, **extra: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_SERVICE_NAME": "gateway-under-test",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-collector-token=t0ken",
        "OTEL_BSP_SCHEDULE_DELAY": "50",  # milliseconds: spans leave soon after they end
        **extra,
    }


@pytest.fixture(scope="module")
def gateway(
    gateway_config: None, receiver: OtlpReceiver, django_db_blocker: Any, tmp_path_factory: Any
) -> Iterator[LiveGateway]:
    from proxy.models import Provider
    from proxy.services import route_upsert

    with django_db_blocker.unblock():  # fails once per marker, then the second deployment answers
        fake = Provider.objects.get(name="fake")
        route_upsert(model=RETRY_ROUTE, provider=fake, upstream_model="fake-flaky-503-1", priority=0)
        route_upsert(model=RETRY_ROUTE, provider=fake, upstream_model="gpt-up", priority=1)
    env = otel_env(receiver, TRACE_DIR=str(tmp_path_factory.mktemp("traces")), PROXY_RETRY_BACKOFF_BASE="0.01")
    live = LiveGateway(env=env).start()
    yield live
    live.terminate()


# --- helpers ----------------------------------------------------------------------------
def traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def chat_body(model: str, marker: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": marker}], **extra}


def received_with(fake: FakeUpstream, marker: str) -> list[ReceivedRequest]:
    return [r for r in list(fake.requests) if marker in str(r.body)]


def by_name(spans: list[ExportedSpan]) -> dict[str, ExportedSpan]:
    return {s.name: s for s in spans}


def server_span(spans: list[ExportedSpan]) -> ExportedSpan:
    (server,) = [s for s in spans if s.kind == SERVER]
    return server


def clients(spans: list[ExportedSpan]) -> list[ExportedSpan]:
    return sorted((s for s in spans if s.kind == CLIENT), key=lambda s: s.attributes["gateway.attempt"])


# --- end to end ----------------------------------------------------------------------------
def test_a_chat_request_is_one_server_span_of_the_genai_conventions_with_its_steps_and_its_attempt(
    gateway: LiveGateway, receiver: OtlpReceiver, key: IssuedKey, fake_upstream: FakeUpstream
) -> None:
    marker = unique_marker()
    parent, client_trace, client_span = traceparent()
    headers = {**key.headers, "traceparent": parent, "tracestate": "vendor=abc"}
    answer = httpx.post(f"{gateway.url}/v1/chat/completions", json=chat_body("gpt-test", marker), headers=headers)
    assert answer.status_code == 200
    spans = receiver.trace(answer.headers["x-request-id"], spans=6)

    server = server_span(spans)
    assert (server.name, server.trace_id, server.parent_span_id) == ("chat gpt-test", client_trace, client_span)
    attributes = server.attributes
    assert {k: attributes[k] for k in ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model")} == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-test",
    }
    assert attributes["gen_ai.response.model"] == "gpt-up"
    assert attributes["gen_ai.response.id"] == "chatcmpl-fake"
    assert attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert (attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"]) == (12, 20)
    assert attributes["server.address"] == "127.0.0.1"
    assert attributes["gateway.tenant.id"] == key.tenant_id
    assert key.plaintext.startswith(attributes["gateway.key.prefix"])
    # 12 input tokens at $0.15/M and 20 output tokens at $0.60/M, exactly
    assert Decimal(attributes["gateway.cost_usd"]) == Decimal("0.0000138")
    assert attributes["gateway.overhead_ms"] == pytest.approx(float(answer.headers["x-gateway-overhead-ms"]))
    assert attributes["http.response.status_code"] == 200
    assert server.status != ERROR and "error.type" not in attributes
    assert server.resource["service.name"] == "gateway-under-test"
    assert server.resource["deployment.environment"] == "test"
    assert all(h.get("x-collector-token") == "t0ken" for h in receiver.headers)

    steps = by_name(spans)
    for step in ("prepare", "admit", "cache", "forward"):
        assert steps[step].parent_span_id == server.span_id, step
    (attempt,) = clients(spans)
    assert (attempt.name, attempt.parent_span_id) == ("chat gpt-up", steps["forward"].span_id)
    assert attempt.attributes["gen_ai.provider.name"] == "openai"
    assert attempt.attributes["gateway.provider"] == "fake"
    assert attempt.attributes["http.response.status_code"] == 200
    assert attempt.attributes["server.port"] == fake_upstream.port

    # the upstream got the attempt's context: the client's trace, the CLIENT span as parent
    (upstream,) = received_with(fake_upstream, marker)
    sent = {k.lower(): v for k, v in upstream.headers.items()}
    assert sent["traceparent"] == f"00-{client_trace}-{attempt.span_id}-01"
    assert sent["tracestate"] == "vendor=abc"


def test_a_streams_span_ends_when_the_stream_ends_and_carries_its_usage(
    gateway: LiveGateway, receiver: OtlpReceiver, key: IssuedKey
) -> None:
    body = chat_body("fake/fake-slow", unique_marker(), stream=True, stream_options={"include_usage": True})
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, headers=key.headers) as answer:
        headers_at = time.time_ns()
        assert answer.status_code == 200
        streamed = b"".join(answer.iter_bytes())
        ended_at = time.time_ns()
    assert b"[DONE]" in streamed and ended_at - headers_at > 500_000_000  # 20 chunks, 50 ms apart
    spans = receiver.trace(answer.headers["x-request-id"], spans=6)
    server = server_span(spans)
    assert server.name == "chat fake/fake-slow"
    assert server.end_ns > headers_at + 500_000_000  # not when the headers went out
    (attempt,) = clients(spans)
    assert attempt.end_ns > headers_at + 500_000_000
    assert server.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert server.attributes["gen_ai.response.id"] == "chatcmpl-fake"
    assert (server.attributes["gen_ai.usage.input_tokens"], server.attributes["gen_ai.usage.output_tokens"]) == (12, 20)
    assert server.attributes["gen_ai.request.stream"] is True


def test_cache_and_reasoning_tokens_are_named_as_the_conventions_name_them(
    gateway: LiveGateway, receiver: OtlpReceiver, key: IssuedKey
) -> None:
    answer = httpx.post(
        f"{gateway.url}/v1/chat/completions", json=chat_body("fake/fake-cached", unique_marker()), headers=key.headers
    )
    assert answer.status_code == 200
    attributes = server_span(receiver.trace(answer.headers["x-request-id"], spans=6)).attributes
    # fake-cached: 100 prompt tokens of which 40 cached, 30 completion tokens of which 10 reasoning
    assert attributes["gen_ai.usage.input_tokens"] == 100
    assert attributes["gen_ai.usage.cache_read.input_tokens"] == 40
    assert attributes["gen_ai.usage.output_tokens"] == 30
    assert attributes["gen_ai.usage.reasoning.output_tokens"] == 10


def test_an_anthropic_stream_is_named_and_read_in_its_own_shape(
    gateway: LiveGateway, receiver: OtlpReceiver, key: IssuedKey
) -> None:
    body = {"model": "claude-cached", "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.stream("POST", f"{gateway.url}/v1/messages", json=body, headers=key.headers) as answer:
        assert answer.status_code == 200
        b"".join(answer.iter_bytes())
    spans = receiver.trace(answer.headers["x-request-id"], spans=5)  # no cache step: messages are not cached
    server = server_span(spans)
    assert server.name == "chat claude-cached"
    assert server.attributes["gen_ai.provider.name"] == "anthropic"
    assert server.attributes["gen_ai.response.finish_reasons"] == ["end_turn"]
    assert server.attributes["gen_ai.request.max_tokens"] == 50
    # 50 input, 40 read from the cache and 30 written to it (ANTHROPIC_CACHED_USAGE)
    assert server.attributes["gen_ai.usage.input_tokens"] == 120
    assert server.attributes["gen_ai.usage.cache_read.input_tokens"] == 40
    assert server.attributes["gen_ai.usage.cache_creation.input_tokens"] == 30


def test_each_upstream_attempt_is_a_client_span_and_the_retry_says_why(
    gateway: LiveGateway, receiver: OtlpReceiver, key: IssuedKey, fake_upstream: FakeUpstream
) -> None:
    marker = unique_marker()
    answer = httpx.post(f"{gateway.url}/v1/chat/completions", json=chat_body(RETRY_ROUTE, marker), headers=key.headers)
    assert (answer.status_code, answer.headers["x-gateway-attempts"]) == (200, "2")
    spans = receiver.trace(answer.headers["x-request-id"], spans=7)
    failed, answered = clients(spans)
    assert failed.name == "chat fake-flaky-503-1"
    assert (failed.status, failed.attributes["error.type"]) == (ERROR, "fake_503")
    assert failed.attributes["http.response.status_code"] == 503
    assert failed.attributes["gateway.attempt.retried"] is True
    assert answered.name == "chat gpt-up"
    assert answered.attributes["gateway.retry.reason"] == "fake_503"
    assert answered.status != ERROR
    assert server_span(spans).status != ERROR
    # each attempt sent its own span's context
    sent = [{k.lower(): v for k, v in r.headers.items()}["traceparent"] for r in received_with(fake_upstream, marker)]
    assert [p.split("-")[2] for p in sent] == [failed.span_id, answered.span_id]


def test_an_upstream_error_marks_the_spans_with_the_gateways_error_code(
    gateway: LiveGateway, receiver: OtlpReceiver, key: IssuedKey
) -> None:
    answer = httpx.post(
        f"{gateway.url}/v1/chat/completions", json=chat_body("fake/fake-error-400", "x"), headers=key.headers
    )
    assert answer.status_code == 400
    spans = receiver.trace(answer.headers["x-request-id"], spans=6)
    server, (attempt,) = server_span(spans), clients(spans)
    assert (server.status, server.attributes["error.type"]) == (ERROR, "fake_400")
    assert server.attributes["http.response.status_code"] == 400
    assert (attempt.status, attempt.attributes["error.type"]) == (ERROR, "fake_400")


def test_a_refusal_before_any_upstream_is_an_error_span_with_its_code(
    gateway: LiveGateway, receiver: OtlpReceiver, key: IssuedKey
) -> None:
    answer = httpx.post(f"{gateway.url}/v1/chat/completions", json=chat_body("no-such-model", "x"), headers=key.headers)
    assert answer.status_code == 404
    spans = receiver.trace(answer.headers["x-request-id"], spans=2)
    server = server_span(spans)
    assert server.name == "chat no-such-model"
    assert (server.status, server.attributes["error.type"]) == (ERROR, "model_not_found")
    assert by_name(spans)["prepare"].status == ERROR
    assert not clients(spans)


def test_a_cache_hit_answered_in_front_of_django_is_one_span_without_an_attempt(
    gateway: LiveGateway, receiver: OtlpReceiver, issue_key: Callable[..., IssuedKey]
) -> None:
    key = issue_key(cache_ttl_seconds=600)
    body = chat_body("gpt-test", unique_marker())
    first = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=key.headers)
    assert first.headers["x-cache"] == "miss"
    assert server_span(receiver.trace(first.headers["x-request-id"], spans=6)).attributes["gateway.cache.result"] == (
        "miss"
    )
    deadline = time.monotonic() + 10  # the entry is stored once the answer is complete
    while (hit := httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=key.headers)).headers[
        "x-cache"
    ] != "hit" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hit.headers["x-cache"] == "hit"
    spans = receiver.trace(hit.headers["x-request-id"], spans=4)
    server = server_span(spans)
    assert server.attributes["gateway.cache.result"] == "hit"
    assert server.attributes["gateway.cost_usd"] == "0"
    assert server.attributes["gen_ai.response.id"] == "chatcmpl-fake"
    assert {s.name for s in spans} >= {"prepare", "cache", "admit"} and not clients(spans)


def test_prompts_and_answers_go_into_the_span_only_for_a_key_that_opted_in_and_redacted(
    gateway: LiveGateway, receiver: OtlpReceiver, issue_key: Callable[..., IssuedKey]
) -> None:
    body = chat_body("gpt-test", f"my key is {SECRET}")
    traced = issue_key(trace_sample_rate=Decimal("1"))
    answer = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=traced.headers)
    events = dict(server_span(receiver.trace(answer.headers["x-request-id"], spans=6)).events)
    prompt = events["gen_ai.content.prompt"]["gen_ai.prompt"]
    assert "my key is" in prompt and "[redacted]" in prompt and SECRET not in prompt  # as in the trace files
    assert "w0 w1" in events["gen_ai.content.completion"]["gen_ai.completion"]

    untraced = issue_key()
    answer = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=untraced.headers)
    spans = receiver.trace(answer.headers["x-request-id"], spans=6)
    assert all(not s.events for s in spans)
    assert not any(SECRET in str(s.attributes) for s in spans)


def test_spans_still_queued_at_shutdown_are_exported_before_the_process_exits(
    gateway_config: None, receiver: OtlpReceiver, key: IssuedKey
) -> None:
    # Under uvicorn (lifespan shutdown), with a batch delay no test waits for.
    live = LiveGateway(env=otel_env(receiver, OTEL_BSP_SCHEDULE_DELAY="600000"), server="uvicorn").start()
    try:
        answer = httpx.post(f"{live.url}/v1/chat/completions", json=chat_body("gpt-test", "x"), headers=key.headers)
        assert answer.status_code == 200
    finally:
        live.terminate()  # uvicorn ends with the SIGTERM it was sent, once shut down
    assert receiver.trace(answer.headers["x-request-id"], spans=6, timeout=0.5)


# --- off ------------------------------------------------------------------------------------
def test_without_an_endpoint_nothing_is_exported_and_upstream_headers_are_untouched(
    gateway_config: None, key: IssuedKey, fake_upstream: FakeUpstream
) -> None:
    # The other OTEL_* variables are set and a receiver listens where the
    # SDK would send by default (localhost:4318): without an endpoint the
    # gateway must not turn traces on.
    try:
        default = OtlpReceiver(port=4318).start()
    except OSError:
        pytest.skip("port 4318 is in use here")
    env = {"OTEL_SERVICE_NAME": "gateway-off", "OTEL_BSP_SCHEDULE_DELAY": "50"}
    live = LiveGateway(env=env).start()
    marker = unique_marker()
    try:
        parent, _, _ = traceparent()
        headers = {**key.headers, "traceparent": parent}
        answer = httpx.post(f"{live.url}/v1/chat/completions", json=chat_body("gpt-test", marker), headers=headers)
        assert answer.status_code == 200
    finally:
        live.terminate()  # a gateway with traces on would flush them now
        default.stop()
    assert default.spans == [] and default.headers == []
    (upstream,) = received_with(fake_upstream, marker)
    assert not {"traceparent", "tracestate"} & {k.lower() for k in upstream.headers}


def test_nothing_of_opentelemetry_is_imported_by_the_request_path_or_a_server_without_an_endpoint() -> None:
    on_the_path = {
        f"{module}: {name}"
        for module, path in request_path().items()
        for name in imports(path, top_level_only=True)
        if name.startswith("opentelemetry")
    }
    assert not on_the_path
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    script = (
        "import sys, gateway.asgi, proxy.telemetry as t; "
        "print(t.active, sorted({m.split('.')[1] for m in sys.modules if m.startswith('opentelemetry.')}))"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == "False"
    assert "sdk" not in out.stdout and "exporter" not in out.stdout


def test_off_the_api_app_is_not_wrapped() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        return None

    assert not telemetry.active
    assert telemetry.telemetry_asgi(app) is app


def test_grpc_without_its_exporter_says_so_and_stays_off(monkeypatch: Any, caplog: Any) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    assert telemetry.telemetry_setup() is False
    assert not telemetry.active
    assert "opentelemetry-exporter-otlp-proto-grpc" in caplog.text


@pytest.mark.parametrize(
    ("variables", "wanted"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_SERVICE_NAME": "gw"}, False),
    ],
)
def test_traces_are_on_only_when_an_otlp_endpoint_is_set(
    monkeypatch: Any, variables: dict[str, str], wanted: bool
) -> None:
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert telemetry.telemetry_wanted() is wanted


# --- pure pieces --------------------------------------------------------------------------------
def test_usage_is_counted_as_the_conventions_count_it() -> None:
    usage = Usage(
        input_tokens=10,
        cached_input_tokens=40,
        cache_write_5m_tokens=20,
        cache_write_1h_tokens=5,
        output_tokens=7,
        reasoning_tokens=3,
    )
    assert telemetry_genai.usage_attributes(usage) == {
        "gen_ai.usage.input_tokens": 75,
        "gen_ai.usage.output_tokens": 10,
        "gen_ai.usage.cache_read.input_tokens": 40,
        "gen_ai.usage.cache_creation.input_tokens": 25,
        "gen_ai.usage.reasoning.output_tokens": 3,
    }
    assert telemetry_genai.usage_attributes(Usage(input_tokens=1)) == {
        "gen_ai.usage.input_tokens": 1,
        "gen_ai.usage.output_tokens": 0,
    }


@pytest.mark.parametrize(
    ("nanos", "text"),
    [(0, "0"), (2400, "0.0000024"), (1_000_000_000, "1"), (12_345_000_000, "12.345"), (1, "0.000000001")],
)
def test_cost_is_an_exact_decimal_string(nanos: int, text: str) -> None:
    assert telemetry_genai.usd(nanos) == text


@pytest.mark.parametrize(
    ("chunk", "facts"),
    [
        (
            b'data: {"id": "c1", "model": "m", "choices": [{"delta": {}, "finish_reason": "length"}]}\n\n'
            b"data: [DONE]\n\n",
            ("c1", "m", ["length"]),
        ),
        (
            b'event: message_start\ndata: {"type": "message_start", "message": {"id": "msg_1", "model": "claude"}}\n\n'
            b'event: message_delta\ndata: {"type": "message_delta", "delta": {"stop_reason": "tool_use"}}\n\n',
            ("msg_1", "claude", ["tool_use"]),
        ),
        (
            b'event: response.created\ndata: {"type": "response.created", "response": {"id": "resp_1", '
            b'"object": "response", "model": "gpt", "status": "in_progress"}}\n\n'
            b'event: response.completed\ndata: {"type": "response.completed", "response": {"id": "resp_1", '
            b'"object": "response", "model": "gpt", "status": "incomplete", '
            b'"incomplete_details": {"reason": "max_output_tokens"}}}\n\n',
            ("resp_1", "gpt", ["max_output_tokens"]),
        ),
        (b'{"model": "llama", "done": true, "done_reason": "stop"}\n', ("", "llama", ["stop"])),
    ],
)
def test_an_answers_id_model_and_finish_reasons_are_read_in_every_apis_shape(
    chunk: bytes, facts: tuple[str, str, list[str]]
) -> None:
    found = telemetry_genai.AnswerFacts()
    found.read_chunk(chunk)
    assert (found.id, found.model, found.reasons) == facts


def test_the_error_code_is_read_from_each_envelope() -> None:
    openai = b'{"error": {"message": "m", "type": "t", "code": "budget_exceeded"}}'
    assert telemetry_genai.envelope_error_code(openai) == "budget_exceeded"
    assert telemetry_genai.envelope_error_code(b'{"error": "m", "code": "rate_limited"}') == "rate_limited"
    assert telemetry_genai.envelope_error_code(b'{"type": "error", "error": {"type": "authentication_error"}}') == (
        "authentication_error"
    )
    assert telemetry_genai.envelope_error_code(b"<html>") == ""
