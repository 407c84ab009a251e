"""The spans of one traced request (proxy.telemetry): the SERVER span and
its steps (`RequestSpan`), and one CLIENT span per upstream attempt
(`AttemptSpan`), named and attributed after the GenAI semantic conventions
(proxy.telemetry_genai). Used only when traces are on: the SDK's tracer,
propagator and trace module are bound here by telemetry_setup.
"""

from collections import deque
from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from gateway.kernel.context import RouteTarget, TenantContext, UsageEvent
from gateway.kernel.errors import GatewayError
from proxy.telemetry_genai import (
    ERROR_TYPE,
    OPERATION,
    OPERATION_BY_DIALECT,
    PROVIDER,
    REQUEST_MODEL,
    RESPONSE_MODEL,
    AnswerFacts,
    envelope_error_code,
    provider_name,
    server_attributes,
    usage_attributes,
    usd,
)
from proxy.tracing import TraceCapture, trace_record

if TYPE_CHECKING:
    from cachestore.entry import CachedEntry
    from proxy.caching import HitAnswer
    from proxy.dialects import ClientCall

T = TypeVar("T")
_tracer: Any = None
_propagator: Any = None
_trace: Any = None  # the opentelemetry.trace module, once loaded
OVERHEAD_HEADER = b"x-gateway-overhead-ms"
_FACTS_MAX_BYTES = 1024 * 1024  # a JSON answer larger than this is not read for its id and finish reason
_TAIL_CHUNKS = 4  # a stream's last chunks, read at its end for the finish reason


def spans_bind(tracer: Any, propagator: Any, trace: Any) -> None:
    """The SDK's tracer, W3C propagator and trace module, once traces are on."""
    global _tracer, _propagator, _trace
    _tracer, _propagator, _trace = tracer, propagator, trace


def _trace_headers(scope: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        if name in (b"traceparent", b"tracestate"):
            found[name.decode()] = value.decode("latin-1")
    return found


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
        self.operation = OPERATION_BY_DIALECT.get(call.dialect.value, self.operation)
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
            **server_attributes(target.provider.base_url),
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
            **server_attributes(target.provider.base_url),
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
        facts = AnswerFacts()
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
            facts = AnswerFacts()
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
            facts = AnswerFacts()
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
            self.error(envelope_error_code(message.get("body", b"")) or str(self.status), replace=False)

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


def _mark_error(span: Any, code: str, message: str = "") -> None:
    span.set_attribute(ERROR_TYPE, code)
    span.set_status(_trace.Status(_trace.StatusCode.ERROR, message or code))


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()
