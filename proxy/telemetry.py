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

This module turns traces on and wraps the app; the spans are built in
proxy.telemetry_spans, and their GenAI names and values are read in
proxy.telemetry_genai.

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
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from gateway.kernel.context import TenantContext
from proxy.telemetry_genai import OPERATION_BY_PATH
from proxy.telemetry_spans import RequestSpan, spans_bind

if TYPE_CHECKING:
    from proxy.dialects import ClientCall

log = logging.getLogger(__name__)

active = False  # set once by telemetry_setup; everything below is used only when True
_provider: Any = None
_current: "contextvars.ContextVar[RequestSpan | None]" = contextvars.ContextVar("otel_request", default=None)

DEFAULT_SERVICE_NAME = "llm-gateway"
_SHUTDOWN_SECONDS = 10.0


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
    global active, _provider
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
    _provider = provider
    # W3C trace context only: a client's baggage is not for the providers.
    spans_bind(provider.get_tracer("gateway"), TraceContextTextMapPropagator(), trace)
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
    for suffix, operation in OPERATION_BY_PATH:
        if path.endswith(suffix):
            return operation
    return None


def request_span(ctx: TenantContext, call: "ClientCall", request_id: str) -> "RequestSpan | None":
    """The current request's span, named now that its model is known
    (proxy.pipeline.prepare); None when this request has none."""
    request = _current.get()
    if request is not None:
        request.named(ctx, call, request_id)
    return request
