"""OpenTelemetry traces of the request path, when a collector is configured.

On when the standard OTEL_EXPORTER_OTLP_ENDPOINT or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set (and OTEL_SDK_DISABLED is not
true): `telemetry_setup` builds the official SDK, which reads the standard
variables itself (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES,
OTEL_TRACES_SAMPLER and _ARG, OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, _COMPRESSION,
OTEL_BSP_*), and exports over OTLP/HTTP (protobuf) through a batch processor
flushed on shutdown. `grpc` works when the gRPC exporter package is installed.

Off (the default) nothing of OpenTelemetry is imported: `telemetry_asgi`
returns the app as it is, and each pipeline step pays one `is None` check of
`Prepared.span`. Upstream requests are then sent with their headers untouched.

The spans of one request (names and attributes after the GenAI semantic
conventions, plus the gateway's own `gateway.*`):

    chat gpt-4o              SERVER  first byte in to last byte out (a stream's end)
      prepare                        read, authenticate, parse, route
      admit                          rate limits, requests in flight
      cache                          the response cache
      forward                        budgets, attempts, until the answer has ended
        chat gpt-4o-2024-08-06 CLIENT  one per upstream attempt, ended with its usage record

The client's W3C `traceparent` (and `tracestate`) is continued, and each
attempt sends its CLIENT span's context upstream. Prompts and answers go into
the span (events `gen_ai.content.prompt` and `gen_ai.content.completion`) only
for requests the key's or tenant's `trace_sample_rate` captures
(proxy.tracing), redacted as the trace files are.
"""

import asyncio
import contextvars
import functools
import logging
import os
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import orjson

from gateway.kernel.context import RouteTarget, TenantContext, Usage, UsageEvent
from gateway.kernel.errors import GatewayError
from proxy.tracing import TraceCapture, trace_record

if TYPE_CHECKING:
    from cachestore.entry import CachedEntry
    from proxy.caching import HitAnswer
    from proxy.dialects import ClientCall

log = logging.getLogger(__name__)
T = TypeVar("T")

active = False  # set once by telemetry_setup; everything below is used only when True
_provider: Any = None
_tracer: Any = None
_propagator: Any = None
_trace: Any = None  # the opentelemetry.trace module, once loaded
_current: "contextvars.ContextVar[RequestSpan | None]" = contextvars.ContextVar("otel_request", default=None)

DEFAULT_SERVICE_NAME = "llm-gateway"
OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_ID = "gen_ai.response.id"
FINISH_REASONS = "gen_ai.response.finish_reasons"
ERROR_TYPE = "error.type"
OVERHEAD_HEADER = b"x-gateway-overhead-ms"
_SHUTDOWN_SECONDS = 10.0
_FACTS_MAX_BYTES = 1024 * 1024  # a JSON answer larger than this is not read for its id and finish reason
_TAIL_CHUNKS = 4  # a stream's last chunks, read at its end for the finish reason

# Before the body is parsed the path says the operation (a refusal then is
# still named); the dialect says it once parsed.
_OPERATION_BY_PATH = (
    ("/chat/completions", "chat"),
    ("/messages/count_tokens", "count_tokens"),
    ("/messages", "chat"),
    ("/responses", "chat"),
    ("/completions", "text_completion"),
    ("/embeddings", "embeddings"),
    ("/api/chat", "chat"),
    ("/api/generate", "text_completion"),
    ("/api/embed", "embeddings"),
)
_OPERATION_BY_DIALECT = {
    "chat.completions": "chat",
    "messages": "chat",
    "responses": "chat",
    "ollama.chat": "chat",
    "completions": "text_completion",
    "ollama.generate": "text_completion",
    "embeddings": "embeddings",
    "messages.count_tokens": "count_tokens",
}
# Provider kinds (proxy.presets) under their well-known gen_ai.provider.name;
# any other kind is named as it is.
_PROVIDER_NAMES = {
    "azure": "azure.ai.openai",
    "gemini": "gcp.gemini",
    "mistral": "mistral_ai",
}


# --- setup and shutdown ---------------------------------------------------------
def telemetry_wanted() -> bool:
    """Whether the environment asks for traces (no SDK import)."""
    env = os.environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = {e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",")}
    if "otlp" not in exporters:
        if exporters - {"none", ""}:
            log.warning("OTEL_TRACES_EXPORTER=%s: only otlp is supported; traces are off", env["OTEL_TRACES_EXPORTER"])
        return False
    return bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip() or env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    )


def telemetry_setup() -> bool:
    """Turn traces on when the environment asks for them; True when on.
    Called once per server process, before the app is built (gateway.asgi)."""
    global active, _provider, _tracer, _propagator, _trace
    if active or not telemetry_wanted():
        return active
    exporter_class = _exporter_class()
    if exporter_class is None:
        return False
    from opentelemetry import trace
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    resource = Resource.create()  # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    provider = TracerProvider(resource=resource)  # the sampler from OTEL_TRACES_SAMPLER(_ARG)
    provider.add_span_processor(BatchSpanProcessor(exporter_class()))  # endpoint, headers, timeout from OTEL_*
    _provider, _trace = provider, trace
    _tracer = provider.get_tracer("gateway")
    # W3C trace context only: a client's baggage is not for the providers.
    _propagator = TraceContextTextMapPropagator()
    active = True
    log.info(
        "OpenTelemetry traces on: service %s, exported to %s",
        resource.attributes.get(SERVICE_NAME),
        _endpoint_for_log(),
    )
    return True


def _exporter_class() -> Any:
    env = os.environ
    protocol = (
        (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf")
        .strip()
        .lower()
    )
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
        except ImportError:
            log.error(
                "OpenTelemetry traces are off: OTEL_EXPORTER_OTLP_PROTOCOL is grpc and the gRPC exporter "
                "(the opentelemetry-exporter-otlp-proto-grpc package) is not installed; install it, or send "
                "http/protobuf to the collector's OTLP/HTTP port (4318)"
            )
            return None
        return GrpcSpanExporter
    if protocol != "http/protobuf":
        log.warning("OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported: traces are sent as http/protobuf", protocol)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter


def _endpoint_for_log() -> str:
    url = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
    parts = urlsplit(url.strip())
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"  # no credentials


async def telemetry_shutdown() -> None:
    """Export the spans still queued (server shutdown, gateway.lifecycle);
    at most _SHUTDOWN_SECONDS, then whatever is left is dropped."""
    provider = _provider
    if provider is None:
        return
    try:
        await asyncio.wait_for(asyncio.to_thread(provider.shutdown), _SHUTDOWN_SECONDS)
    except TimeoutError:
        log.warning("OpenTelemetry: spans not exported within %.0fs of shutdown were dropped", _SHUTDOWN_SECONDS)


# --- the server span: one per GenAI request ------------------------------------------
def telemetry_asgi(app: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """`app` with a SERVER span around each GenAI request; `app` itself when off."""
    if not active:
        return app

    async def traced(scope: dict[str, Any], receive: Any, send: Any) -> None:
        operation = _operation_for_path(scope)
        if operation is None:
            return await app(scope, receive, send)
        request = RequestSpan(operation, scope)
        token = _current.set(request)  # the request's tasks (the view's included) see it

        async def sending(message: Any) -> None:
            request.sent(message)
            await send(message)

        try:
            await app(scope, receive, sending)
        except BaseException as exc:
            request.error(type(exc).__name__, replace=False)
            raise
        finally:
            _current.reset(token)
            request.end()

    return traced


def _operation_for_path(scope: dict[str, Any]) -> str | None:
    if scope.get("type") != "http" or scope.get("method") != "POST":
        return None
    path = scope["path"].rstrip("/")
    for suffix, operation in _OPERATION_BY_PATH:
        if path.endswith(suffix):
            return operation
    return None


def _trace_headers(scope: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        if name in (b"traceparent", b"tracestate"):
            found[name.decode()] = value.decode("latin-1")
    return found


def request_span(ctx: TenantContext, call: "ClientCall", request_id: str) -> "RequestSpan | None":
    """The current request's span, named now that its model is known
    (proxy.pipeline.prepare); None when this request has none."""
    request = _current.get()
    if request is not None:
        request.named(ctx, call, request_id)
    return request


class RequestSpan:
    """The SERVER span of one request and its open steps."""

    __slots__ = (
        "span",
        "context",
        "recording",
        "operation",
        "request_id",
        "status",
        "error_code",
        "error_message",
        "retry_reason",
        "_prepare",
        "_forward",
        "_error_body",
        "_ended",
    )

    def __init__(self, operation: str, scope: dict[str, Any]) -> None:
        parent = _propagator.extract(_trace_headers(scope))
        attributes = {OPERATION: operation, "http.request.method": scope["method"], "url.path": scope["path"]}
        self.span = _tracer.start_span(operation, context=parent, kind=_trace.SpanKind.SERVER, attributes=attributes)
        self.context = _trace.set_span_in_context(self.span)
        self.recording: bool = self.span.is_recording()  # False: sampled out (the context still travels)
        self.operation = operation
        self.request_id = ""
        self.status = 0
        self.error_code = ""
        self.error_message = ""
        self.retry_reason = ""  # why the next attempt is made
        self._prepare: Any = _tracer.start_span("prepare", context=self.context)
        self._forward: Any = None
        self._error_body = False
        self._ended = False

    # -- the steps
    def named(self, ctx: TenantContext, call: "ClientCall", request_id: str) -> None:
        body = call.body
        model = str(body.get("model", ""))
        self.operation = _OPERATION_BY_DIALECT.get(call.dialect.value, self.operation)
        self.request_id = request_id
        if not self.recording:
            return
        self.span.update_name(f"{self.operation} {model}")
        attributes: dict[str, Any] = {
            OPERATION: self.operation,
            REQUEST_MODEL: model,
            "gen_ai.request.stream": call.stream,
            "gateway.request.id": request_id,
            "gateway.tenant.id": ctx.tenant_id,
            "gateway.key.prefix": ctx.key_prefix,
        }
        for name, key in (
            ("max_completion_tokens", "gen_ai.request.max_tokens"),
            ("max_tokens", "gen_ai.request.max_tokens"),
            ("max_output_tokens", "gen_ai.request.max_tokens"),
            ("temperature", "gen_ai.request.temperature"),
            ("top_p", "gen_ai.request.top_p"),
        ):
            value = body.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                attributes.setdefault(key, value)
        self.span.set_attributes(attributes)

    def routed(self) -> None:
        """Authenticated, parsed and routed: the prepare step ends."""
        if self._prepare is not None:
            self._prepare.end()
            self._prepare = None

    async def step(self, name: str, work: Awaitable[T]) -> T:
        """`work` awaited as a child span `name`; a refusal marks it."""
        span = _tracer.start_span(name, context=self.context)
        try:
            return await work
        except BaseException as exc:
            self._failed(span, exc)
            raise
        finally:
            span.end()

    async def forward(self, work: Awaitable[Any]) -> Any:
        """The forward step: open until the request ends (a stream's last
        byte), the parent of each attempt's CLIENT span."""
        self._forward = span = _tracer.start_span("forward", context=self.context)
        try:
            response = await work
        except BaseException as exc:
            self._failed(span, exc)
            span.end()
            self._forward = None
            raise
        if self.recording and response.status_code < 400:
            self._read_answer(response)
        return response

    def _failed(self, span: Any, exc: BaseException) -> None:
        if isinstance(exc, GatewayError):
            _mark_error(span, exc.code, exc.message)
            self.error(exc.code, exc.message)
        else:
            _mark_error(span, type(exc).__name__)

    # -- the attempts
    def attempt(self, target: RouteTarget, number: int) -> "AttemptSpan":
        """A CLIENT span for one upstream attempt (proxy.forward)."""
        parent = self._forward if self._forward is not None else self.span
        attributes: dict[str, Any] = {
            OPERATION: self.operation,
            PROVIDER: provider_name(target.provider.kind),
            REQUEST_MODEL: target.upstream_model,
            "gateway.provider": target.provider.name,
            "gateway.attempt": number,
            **_server(target.provider.base_url),
        }
        if self.retry_reason:
            attributes["gateway.retry.reason"] = self.retry_reason
        span = _tracer.start_span(
            f"{self.operation} {target.upstream_model}",
            context=_trace.set_span_in_context(parent),
            kind=_trace.SpanKind.CLIENT,
            attributes=attributes,
        )
        return AttemptSpan(self, span, target)

    def answered(self, event: UsageEvent, target: RouteTarget, trace: TraceCapture | None) -> None:
        """The attempt the client got: its usage, cost and outcome."""
        if event.error_code:
            self.error(event.error_code)
        if not self.recording:
            return
        attributes: dict[str, Any] = {
            PROVIDER: provider_name(target.provider.kind),
            RESPONSE_MODEL: event.upstream_model,  # the answer's own `model`, when it has one, replaces it
            "gateway.provider": event.provider,
            "gateway.cost_usd": usd(event.cost_nanos),
            **_server(target.provider.base_url),
            **usage_attributes(event.usage),
        }
        if event.cache_status:
            attributes["gateway.cache.result"] = event.cache_status
        if event.usage_estimated:
            attributes["gateway.usage.estimated"] = True
        self.span.set_attributes(attributes)
        if trace is not None and trace.event is event:
            self._content(trace)

    def cache_hit(self, target: RouteTarget, entry: "CachedEntry", answer: "HitAnswer") -> None:
        """Answered from the response cache: no upstream, no cost."""
        if not self.recording:
            return
        self.span.set_attributes(
            {
                PROVIDER: provider_name(target.provider.kind),
                RESPONSE_MODEL: target.upstream_model,
                "gateway.provider": target.provider.name,
                "gateway.cache.result": "hit",
                "gateway.cost_usd": "0",
                "gateway.cache.saved_usd": usd(entry.cost_nanos),
            }
        )
        facts = _Facts()
        if answer.events is not None:
            for event in answer.events[:1] + answer.events[-_TAIL_CHUNKS:]:
                facts.read_chunk(event)
        else:
            facts.read_json(answer.body)
        facts.apply(self.span)

    # -- the answer as the client gets it
    def _read_answer(self, response: Any) -> None:
        """The answer's id, model and finish reasons: a JSON answer's now, a
        stream's from its first and last chunks once it ends."""
        if self.operation == "embeddings":
            return  # vectors: no id or finish reason worth their parse
        if getattr(response, "streaming", False):
            response.streaming_content = self._tapped(response.streaming_content)
        elif len(response.content) <= _FACTS_MAX_BYTES:
            facts = _Facts()
            facts.read_json(response.content)
            facts.apply(self.span)

    async def _tapped(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        first: bytes | None = None
        tail: deque[bytes] = deque(maxlen=_TAIL_CHUNKS)
        try:
            async for chunk in chunks:
                if first is None:
                    first = chunk
                else:
                    tail.append(chunk)
                yield chunk
        finally:
            facts = _Facts()
            for chunk in ([first] if first else []) + list(tail):
                facts.read_chunk(chunk)
            facts.apply(self.span)

    def _content(self, trace: TraceCapture) -> None:
        """The prompt and the answer, as the trace files hold them (redacted)."""
        record = trace_record(trace)
        self.span.add_event("gen_ai.content.prompt", {"gen_ai.prompt": _as_text(record["request"])})
        if record["response"] is not None:
            self.span.add_event("gen_ai.content.completion", {"gen_ai.completion": _as_text(record["response"])})
        if record["truncated"]:
            self.span.set_attribute("gateway.content.truncated", True)

    # -- the response and the end
    def sent(self, message: Any) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = int(message["status"])
            self._error_body = self.status >= 400
            for name, value in message.get("headers", ()):
                if name.lower() == OVERHEAD_HEADER and self.recording:
                    try:
                        self.span.set_attribute("gateway.overhead_ms", float(value))
                    except ValueError:
                        pass
        elif kind == "http.response.body" and self._error_body:
            self._error_body = False  # an error's envelope is one body message
            self.error(_error_code(message.get("body", b"")) or str(self.status), replace=False)

    def error(self, code: str, message: str = "", *, replace: bool = True) -> None:
        if replace or not self.error_code:
            self.error_code, self.error_message = code, message

    def end(self) -> None:
        if self._ended:
            return
        self._ended = True
        for step in (self._prepare, self._forward):
            if step is not None:
                if step is self._prepare and self.error_code:
                    _mark_error(step, self.error_code, self.error_message)  # refused before it was routed
                step.end()
        self._prepare = self._forward = None
        if self.status:
            self.span.set_attribute("http.response.status_code", self.status)
        if self.error_code:
            _mark_error(self.span, self.error_code, self.error_message)
        self.span.end()


class AttemptSpan:
    """The CLIENT span of one upstream attempt; ended with its usage record
    (proxy.usage), a stream's when the stream ends."""

    __slots__ = ("request", "span", "target")

    def __init__(self, request: RequestSpan, span: Any, target: RouteTarget) -> None:
        self.request = request
        self.span = span
        self.target = target

    def headers(self, headers: dict[str, str]) -> dict[str, str]:
        """The upstream request's headers with this attempt's traceparent."""
        out = dict(headers)
        _propagator.inject(out, context=_trace.set_span_in_context(self.span))
        return out

    def finished(self, event: UsageEvent, trace: TraceCapture | None) -> None:
        span, request = self.span, self.request
        retried = event.request_id != request.request_id  # `<request id>~<n>`: another attempt follows
        if span.is_recording():
            span.set_attribute("http.response.status_code", event.status_code)
            span.set_attributes(usage_attributes(event.usage))
            if retried:
                span.set_attribute("gateway.attempt.retried", True)
            if event.error_code:
                _mark_error(span, event.error_code)
        span.end()
        if retried:
            request.retry_reason = event.error_code or str(event.status_code)
        else:
            request.answered(event, self.target, trace)


# --- attribute helpers -------------------------------------------------------------
def provider_name(kind: str) -> str:
    return _PROVIDER_NAMES.get(kind, kind)


@functools.lru_cache(maxsize=256)
def _server(base_url: str) -> dict[str, Any]:
    parts = urlsplit(base_url)
    found: dict[str, Any] = {"server.address": parts.hostname or ""}
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return found
    found["server.port"] = port
    return found


def usage_attributes(usage: Usage) -> dict[str, int]:
    """Token counts as the conventions count them: input includes cache reads
    and writes, output includes reasoning (the ledger's buckets are disjoint)."""
    found = {
        "gen_ai.usage.input_tokens": usage.prompt_tokens,
        "gen_ai.usage.output_tokens": usage.output_tokens + usage.reasoning_tokens,
    }
    written = usage.cache_write_5m_tokens + usage.cache_write_1h_tokens
    for name, value in (
        ("gen_ai.usage.cache_read.input_tokens", usage.cached_input_tokens),
        ("gen_ai.usage.cache_creation.input_tokens", written),
        ("gen_ai.usage.reasoning.output_tokens", usage.reasoning_tokens),
    ):
        if value:
            found[name] = value
    return found


def usd(nanos: int) -> str:
    """Nano-dollars as an exact decimal string: 2400 -> "0.0000024"."""
    text = format(Decimal(nanos).scaleb(-9), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _mark_error(span: Any, code: str, message: str = "") -> None:
    span.set_attribute(ERROR_TYPE, code)
    span.set_status(_trace.Status(_trace.StatusCode.ERROR, message or code))


def _error_code(body: bytes) -> str:
    """The stable code in an error envelope (OpenAI's and Ollama's carry it;
    Anthropic's only a type)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(data, dict):
        return ""
    error = data.get("error")
    if isinstance(error, dict):
        code = error.get("code") or error.get("type")
        return code if isinstance(code, str) else ""
    code = data.get("code")
    return code if isinstance(code, str) else ""


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


class _Facts:
    """An answer's id, model and finish reasons, in any of the client APIs'
    shapes: chat and completions (`choices[].finish_reason`), Responses
    (`response.status`), Anthropic (`stop_reason`, `message_start`), Ollama
    (`done_reason`)."""

    __slots__ = ("id", "model", "reasons")

    def __init__(self) -> None:
        self.id = ""
        self.model = ""
        self.reasons: list[str] = []

    def read_json(self, raw: bytes) -> None:
        try:
            self.read(orjson.loads(raw))
        except orjson.JSONDecodeError:
            pass

    def read_chunk(self, chunk: bytes) -> None:
        for data in _chunk_events(chunk):
            self.read(data)

    def read(self, data: Any) -> None:
        if not isinstance(data, dict):
            return
        for key in ("response", "message"):  # Responses events, Anthropic's message_start
            inner = data.get(key)
            if isinstance(inner, dict) and ("id" in inner or "model" in inner):
                self.read(inner)
        if not self.id and isinstance(data.get("id"), str):
            self.id = data["id"]
        if not self.model and isinstance(data.get("model"), str):
            self.model = data["model"]
        choices = data.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if isinstance(choice, dict) and isinstance(choice.get("finish_reason"), str):
                self.reasons.append(choice["finish_reason"])
        delta = data.get("delta")
        for holder in (data, delta if isinstance(delta, dict) else {}):
            if isinstance(holder.get("stop_reason"), str):
                self.reasons.append(holder["stop_reason"])
        if isinstance(data.get("done_reason"), str):
            self.reasons.append(data["done_reason"])
        if data.get("object") == "response" and data.get("status") not in (None, "queued", "in_progress"):
            incomplete = data.get("incomplete_details")
            reason = incomplete.get("reason") if isinstance(incomplete, dict) else data.get("status")
            if isinstance(reason, str):
                self.reasons.append(reason)

    def apply(self, span: Any) -> None:
        if not span.is_recording():
            return
        if self.id:
            span.set_attribute(RESPONSE_ID, self.id)
        if self.model:
            span.set_attribute(RESPONSE_MODEL, self.model)
        if self.reasons:
            span.set_attribute(FINISH_REASONS, tuple(self.reasons))


def _chunk_events(chunk: bytes) -> Iterator[Any]:
    """The JSON payloads of a chunk of server-sent events or JSON lines."""
    for line in chunk.split(b"\n"):
        line = line.strip()
        if line.startswith(b"data:"):
            line = line[5:].strip()
        if line.startswith(b"{"):
            try:
                yield orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
