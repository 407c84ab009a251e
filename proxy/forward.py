"""The pipeline's forward step (proxy.pipeline): one request upstream.

For each attempt: reserve the worst case against budgets -> call the
provider in its own dialect (proxy.exchange) -> relay (stream) or pass
through (JSON), translating when the dialects differ -> one usage event,
however it ends (proxy.usage). Retries and fallbacks happen only before the
first byte reaches the client.
"""

import asyncio
import functools
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from django.conf import settings
from django.http import HttpResponse
from django.http.response import HttpResponseBase

from gateway.kernel.context import ProviderConfig, RoutePlan, RouteTarget, TenantContext
from gateway.kernel.errors import ApiFormat, GatewayError, error_response
from proxy.apis.registry import spec_for
from proxy.breaker import breaker, state_reported, target_key
from proxy.caching import (
    CacheFill,
)
from proxy.capacity import Grant, capacity_outcome, capacity_pick, capacity_refusal, capacity_settle
from proxy.dialects import ClientCall
from proxy.exchange import (
    NOTES_HEADER,
    Exchange,
    exchange_for,
    native_fallback,
    native_missing_remember,
)
from proxy.guardrails.run import GuardrailRun, answer_guarded
from proxy.ratelimit import Admission, tokens_estimate
from proxy.retry import RetryPolicy, no_healthy_upstream, retry_policy
from proxy.routing import Catalog, choose
from proxy.stream_cut import BUDGET_CUT, answer_overran
from proxy.streaming import RelayResponse
from proxy.telemetry import AttemptSpan, RequestSpan
from proxy.timing import upstream_waited
from proxy.tracing import TraceCapture
from proxy.upstream import UpstreamTooLargeError, read_bounded, upstream_failure, upstream_session
from proxy.usage import UsageRecorder, reserve_worst_case

log = logging.getLogger(__name__)
# A key after a word boundary, or a long one glued to the word before it
# ("tokensk-..."): the length keeps words such as "task-runner" readable.
_SECRET_LIKE = re.compile(r"\b(sk|pk|rk|key)-[A-Za-z0-9_\-*.]{6,}|(sk|pk|rk)-[A-Za-z0-9_\-]{20,}")
_MAX_UPSTREAM_MESSAGE = 2000
_MAX_ERROR_BODY = 1024 * 1024  # an error body past this is not read (its message would be cut anyway)
# Upstream headers worth passing on; hop-by-hop and encoding headers never are.
_FORWARDED_HEADERS = ("retry-after", "openai-processing-ms", "x-ratelimit-remaining-requests", "request-id")
DEPLOYMENT_HEADER = "x-gateway-deployment"  # provider/upstream model that answered
ATTEMPTS_HEADER = "x-gateway-attempts"


@dataclass
class _Failure:
    """An attempt that failed before any byte reached the client. Recorded
    only once it is known whether another attempt follows: a retried
    attempt's record carries `<request id>~<n>`, the one the client sees
    answered carries the plain request id."""

    recorder: UsageRecorder
    status: int
    code: str
    retryable: bool
    response: HttpResponse | None = None  # the provider's error, in the client's envelope
    error: GatewayError | None = None  # or a transport failure
    retry_after: str | None = None

    def retried(self, attempt: int) -> None:
        recorder = self.recorder
        recorder.request_id = f"{recorder.request_id}~{attempt}"
        recorder.admission = None  # held by the request until its last attempt
        recorder.fill = None  # the cache entry waits for the answer that will come
        recorder.finish(status=self.status, error_code=self.code)

    def answer(self) -> HttpResponseBase:
        if self.recorder.trace is not None and self.response is not None:  # tracing: the error the client gets
            self.recorder.trace.set_body(self.response.content)
        self.recorder.finish(status=self.status, error_code=self.code)
        if self.error is not None:
            raise self.error
        assert self.response is not None
        return self.response


@dataclass
class Attempts:
    """Deployments, then fallback routes, until one answers: at most
    PROXY_RETRY_ATTEMPTS calls, each to a deployment not tried yet and whose
    breaker lets it in, with backoff between them. Nothing is retried once
    the answer has started to reach the client."""

    ctx: TenantContext
    call: ClientCall
    request_id: str
    fill: CacheFill | None
    admission: Admission | None
    trace: TraceCapture | None = None  # a sampled request's capture (proxy.tracing)
    count: int = 0
    purpose: str = ""  # why the gateway makes this call itself (UsageEvent.purpose); "": the client's
    span: RequestSpan | None = None  # OpenTelemetry's span of the request (proxy.telemetry); None: off
    guardrails: GuardrailRun | None = None  # the request's guardrails (proxy.guardrails); None: none apply
    # Upstream limits (proxy.capacity): when the request may wait no longer
    # for room, and how soon the full deployments may have some (None: none was full).
    capacity_deadline: float | None = None
    capacity_retry_in: float | None = None

    async def run(self, catalog: Catalog, plan: RoutePlan) -> HttpResponseBase:
        policy, circuit = retry_policy(), breaker()
        plans = [plan, *(p for name in plan.fallbacks if self.ctx.allows(name) and (p := catalog.resolve(name)))]
        tried: set[int] = set()
        failure: _Failure | None = None
        for index, current in enumerate(plans):
            while self.count < policy.attempts:
                # A full route overflows to its fallbacks at once; the last one waits for room.
                target, grant = await self._choice(current, tried, circuit, may_wait=index == len(plans) - 1)
                if target is None:
                    break  # this route has nothing left: its fallback next
                if failure is not None:
                    failure.retried(self.count)
                    delay = policy.backoff_delay(self.count, failure.retry_after)
                    if delay:
                        waiting = time.perf_counter()
                        await asyncio.sleep(delay)
                        upstream_waited(waiting)
                self.count += 1
                if target.deployment_id is not None:
                    tried.add(target.deployment_id)
                outcome = await self._attempt(target, policy, circuit, grant)
                if isinstance(outcome, HttpResponseBase):
                    return self._annotated(outcome, target)
                failure = outcome
                if not outcome.retryable:
                    break
            if failure is not None and not failure.retryable:
                break
        if failure is None and self.capacity_retry_in is not None:
            # Deployments were there, all at their upstream limits for longer than the request may wait.
            error = capacity_refusal(plan.public_model, self.capacity_retry_in)
            error.headers[ATTEMPTS_HEADER] = "0"
            raise error
        if failure is None and (target := _longest_open(plans, tried, circuit)) is not None:
            # Every deployment's circuit is open: send anyway, to the one open
            # longest (Envoy's panic mode). Refusing would turn one upstream's
            # blip into a cooldown-long outage of every model it serves.
            self.count += 1
            outcome = await self._attempt(target, policy, circuit)
            if isinstance(outcome, HttpResponseBase):
                return self._annotated(outcome, target)
            failure = outcome
        if failure is None:
            error = no_healthy_upstream(plan.public_model, _soonest_retry(plans, circuit))
            error.headers[ATTEMPTS_HEADER] = "0"
            raise error
        if failure.error is not None:
            failure.error.headers[ATTEMPTS_HEADER] = str(self.count)
        response = failure.answer()
        response[ATTEMPTS_HEADER] = str(self.count)
        return response

    async def _choice(
        self, plan: RoutePlan, tried: set[int], circuit: Any, *, may_wait: bool
    ) -> tuple[RouteTarget | None, Grant | None]:
        """A deployment of `plan` with room under its upstream limits, waiting
        for one (at most PROXY_CAPACITY_WAIT_SECONDS over the whole request)
        when every one left is full."""
        tokens = tokens_estimate(self.call.body, self.call.size)
        while True:
            target, grant, retry_in = await _healthy_choice(plan, tried, circuit, tokens)
            if target is not None or retry_in <= 0:
                return target, grant
            self.capacity_retry_in = retry_in
            now = time.monotonic()
            if self.capacity_deadline is None:
                self.capacity_deadline = now + settings.PROXY_CAPACITY_WAIT_SECONDS
            left = self.capacity_deadline - now
            if not may_wait or left <= 0:
                return None, None
            waiting = time.perf_counter()
            await asyncio.sleep(min(retry_in, left))
            upstream_waited(waiting)

    def _annotated(self, response: HttpResponseBase, target: RouteTarget) -> HttpResponseBase:
        response[DEPLOYMENT_HEADER] = f"{target.provider.name}/{target.upstream_model}"
        response[ATTEMPTS_HEADER] = str(self.count)
        return response

    async def _attempt(
        self, target: RouteTarget, policy: RetryPolicy, circuit: Any, grant: Grant | None = None
    ) -> "HttpResponseBase | _Failure":
        call, ctx = self.call, self.ctx
        try:
            exchange = exchange_for(call, target)
            reservation = await reserve_worst_case(
                ctx, target, call.body, prompt_bytes=call.size, output_tokens=call.output_tokens, media=call.media
            )
        except BaseException:
            capacity_settle(grant, -1)  # refused before anything was sent: its room back
            raise
        fmt = spec_for(call.dialect).error_format
        recorder = UsageRecorder(
            ctx=ctx,
            target=target,
            endpoint=call.dialect.value,
            request_id=self.request_id,
            body=call.body,
            observer=exchange.observer,
            reservation=reservation,
            fill=self.fill,
            admission=self.admission,
            trace=self.trace,
            purpose=self.purpose,
            guardrails=self.guardrails,
        )
        recorder.capacity = grant  # its tokens corrected to the answer's when it is recorded
        if self.span is not None:  # OpenTelemetry: this attempt's CLIENT span, ended with its record
            recorder.otel = self.span.attempt(target, self.count)
        key = target_key(target)
        sent = time.perf_counter()
        try:
            response = await _post(exchange, target, recorder.otel)
            if response.status == 404 and (fallback := native_fallback(call, target)) is not None:
                # The kind promised this endpoint, the server lacks it: the
                # same call as chat completions (nothing reached the client yet).
                response.close()
                exchange = fallback
                recorder.observer = exchange.observer
                response = await _post(exchange, target, recorder.otel)
                if response.status < 400:
                    native_missing_remember(call, target)
        except (TimeoutError, aiohttp.ClientError) as exc:
            upstream_waited(sent)
            error = upstream_failure(exc, target.provider.name)
            if key is not None:
                await _breaker_report(circuit, key, failed=True)
            return _Failure(recorder, error.status, error.code, policy.should_retry(None, error), error=error)
        except BaseException:  # the client left while the upstream was thinking
            recorder.finish(status=499, error_code="client_disconnected", client_disconnected=True)
            raise
        # From the headers on, the limit is the silence between two chunks.
        if response.connection is not None and response.connection.protocol is not None:
            response.connection.protocol.read_timeout = target.provider.idle_timeout
        if response.status >= 400:
            upstream_waited(sent)  # the error body is short: its read counts as overhead
        capacity_outcome(grant, response.status, response.headers)  # a 429 lowers the deployment's limit
        failed = response.status >= 500 or response.status in policy.retry_on_status
        if key is not None:
            await _breaker_report(circuit, key, failed=failed)
        if response.status >= 400:
            error_response, code = await _upstream_error(response, recorder, target.provider, fmt)
            return _Failure(
                recorder,
                response.status,
                code,
                policy.should_retry(response.status, None),
                response=error_response,
                retry_after=response.headers.get("Retry-After"),
            )
        out: HttpResponseBase
        if exchange.relay is not None:  # speech: the audio as it arrives (proxy.media_relay)
            upstream_waited(sent)
            out = exchange.relay(response, recorder)
        elif exchange.observer is not None and response.content_type == "text/event-stream":
            upstream_waited(sent)
            out = RelayResponse(response, recorder, fmt, exchange)
        elif exchange.observer is not None:
            return await _not_a_stream(response, recorder, fmt)
        else:
            out = await _pass_through(response, recorder, exchange, fmt, sent)
        if exchange.notes:
            out[NOTES_HEADER] = exchange.notes_header()
        return out


async def _post(exchange: Exchange, target: RouteTarget, otel: AttemptSpan | None) -> aiohttp.ClientResponse:
    upstream = exchange.request
    headers = upstream.headers if otel is None else otel.headers(upstream.headers)  # with its traceparent
    return await upstream_session().post(
        upstream.url, data=upstream.body, headers=headers, timeout=_timeouts(target.provider)
    )


async def _healthy_choice(
    plan: RoutePlan, tried: set[int], circuit: Any, tokens: int
) -> tuple[RouteTarget | None, Grant | None, float]:
    """A deployment not tried yet, with room under its upstream limits
    (proxy.capacity), whose breaker lets this request in; or none and, when
    some were only full, the seconds until one may have room (else 0). Only
    the chosen one's breaker is asked (asking uses up a half-open probe)."""
    excluded = set(tried)
    while True:
        picked = await capacity_pick(_preference(plan, excluded, circuit), tokens)
        target = picked.target
        if target is None:
            return None, None, picked.retry_in
        key = target_key(target)
        if key is None or await circuit.allow(key):
            return target, picked.grant, 0.0
        capacity_settle(picked.grant, -1)  # not sent: its room back
        excluded.add(target.deployment_id)  # type: ignore[arg-type]


def _preference(plan: RoutePlan, excluded: set[int], circuit: Any) -> Iterator[RouteTarget]:
    """The deployments not excluded and not open, best first (each drawn as
    `choose` draws: the best priority, then by weight); lazily, so a first
    choice without limits costs one draw."""
    seen = set(excluded)
    while (target := choose(plan, exclude=seen, healthy=lambda t: _not_open(circuit, target_key(t)))) is not None:
        yield target
        if target.deployment_id is None:
            return  # cannot be excluded: it would be drawn again
        seen.add(target.deployment_id)


async def _breaker_report(circuit: Any, key: str, *, failed: bool) -> None:
    """Tell the breaker how the call went; its state goes to /metrics when
    it may have changed (a failure, or a success while not closed)."""
    before = circuit.state(key)
    await (circuit.record_failure(key) if failed else circuit.record_success(key))
    if failed or before != "closed":
        state_reported(key, circuit.state(key))


def _not_open(circuit: Any, key: str | None) -> bool:
    return key is None or circuit.state(key) != "open"


def _longest_open(plans: list[RoutePlan], tried: set[int], circuit: Any) -> RouteTarget | None:
    """The untried deployment whose circuit closes soonest (it opened first)."""
    candidates = [
        (circuit.retry_in(key), n, target)
        for n, target in enumerate(t for p in plans for t in p.deployments if t.deployment_id not in tried)
        if (key := target_key(target)) is not None
    ]
    return min(candidates, key=lambda c: (c[0], c[1]))[2] if candidates else None


def _soonest_retry(plans: list[RoutePlan], circuit: Any) -> float | None:
    waits = [circuit.retry_in(key) for p in plans for t in p.deployments if (key := target_key(t)) is not None]
    return min(waits) if waits else None


@functools.lru_cache(maxsize=256)
def _timeouts_for(connect: float, first_byte: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=first_byte)


def _timeouts(provider: ProviderConfig) -> aiohttp.ClientTimeout:
    """Connect, then the wait for the response headers; no total limit (a
    stream that keeps moving may run for minutes)."""
    return _timeouts_for(provider.connect_timeout, provider.first_byte_timeout)


async def _pass_through(
    response: aiohttp.ClientResponse, recorder: UsageRecorder, exchange: Exchange, fmt: ApiFormat, sent: float
) -> HttpResponse:
    data = await _read_answer(response, recorder)
    upstream_waited(sent)  # from the request sent to the whole answer read
    try:
        parsed: Any = orjson.loads(data)
    except orjson.JSONDecodeError:
        parsed = None
    try:
        usage = exchange.usage_from_json(parsed)
    except Exception:  # JSON of a shape nobody expected: estimate
        usage = None
    overran = _overran(recorder, usage)
    if not exchange.translated:
        # Output guardrails: the client gets `shown`; the cache keeps the answer as it came.
        shown, blocked = answer_guarded(recorder.guardrails, data)
        price = exchange.answer_price(parsed) if exchange.answer_price is not None else None  # images: size, quality
        recorder.finish(
            status=response.status, usage=usage, body=data, error_code=blocked.code if blocked else overran, price=price
        )
        if blocked is not None:
            return error_response(blocked, fmt)
        content_type = response.headers.get("Content-Type", "application/json")
        out = HttpResponse(shown, status=response.status, content_type=content_type)
    else:
        answer = _translated_answer(parsed, exchange, recorder)
        shown, blocked = answer_guarded(recorder.guardrails, answer)
        recorder.finish(
            status=response.status,
            usage=usage,
            body=answer if answer else None,
            error_code=(overran if blocked is None else blocked.code) if answer else "upstream_bad_response",
        )
        if blocked is not None:
            return error_response(blocked, fmt)
        if not answer:
            error = GatewayError(
                502,
                "upstream_bad_response",
                f"The provider '{recorder.target.provider.name}' sent an answer that is not the JSON its API defines.",
            )
            return error_response(error, fmt)
        if exchange.keeper is not None:  # stored before the client has it (proxy.responses_state)
            await exchange.keeper.keep(recorder.ctx)
        out = HttpResponse(shown, status=response.status, content_type="application/json")
    _copy_headers(response, out)
    return out


def _overran(recorder: UsageRecorder, usage: Any) -> str:
    """BUDGET_CUT when a whole answer cost more than its reservation (the
    provider ignored max_tokens): its true cost is recorded all the same."""
    if not answer_overran(recorder.reservation, recorder.target.price, usage):
        return ""
    log.warning(
        "%s answered past the budget reservation of request %s (max_tokens ignored?)",
        recorder.target.provider.name,
        recorder.request_id,
    )
    return BUDGET_CUT


async def _read_answer(response: aiohttp.ClientResponse, recorder: UsageRecorder) -> bytes:
    """The upstream's whole answer, within PROXY_MAX_RESPONSE_BYTES; a failure
    to read it is recorded and raised as the client's error."""
    provider = recorder.target.provider.name
    try:
        data = await read_bounded(response, provider)
    except UpstreamTooLargeError as too_big:
        response.close()  # not worth reading to its end: drop the connection
        recorder.finish(status=too_big.status, error_code=too_big.code)
        raise
    except (TimeoutError, aiohttp.ClientError) as exc:
        response.close()
        error = upstream_failure(exc, provider)
        recorder.finish(status=error.status, error_code=error.code)
        raise error from None
    except BaseException:
        response.close()
        recorder.finish(status=499, error_code="client_disconnected", client_disconnected=True)
        raise
    response.release()
    return data


async def _not_a_stream(response: aiohttp.ClientResponse, recorder: UsageRecorder, fmt: ApiFormat) -> HttpResponse:
    """A stream was asked for and the upstream answered 2xx with something
    else. Relaying it would hand an SSE client a body it cannot parse: an
    error object becomes the client's error; a complete non-streamed answer
    is refused (`upstream_not_streamed`: a provider that ignores `stream`
    should be called without it); anything else (HTML from a proxy in
    front of the provider, say) is `upstream_bad_response`."""
    provider = recorder.target.provider
    data = await _read_answer(response, recorder)
    try:
        parsed: Any = orjson.loads(data)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict) and parsed.get("error"):
        message, code, param = _upstream_error_details(data, provider)
        error = GatewayError(502, code, message, param=param)
    elif isinstance(parsed, dict):
        error = GatewayError(
            502,
            "upstream_not_streamed",
            f"The provider '{provider.name}' answered a streamed request with a whole, non-streamed answer.",
        )
    else:
        kind = response.content_type or "no content type"
        error = GatewayError(
            502,
            "upstream_bad_response",
            f"The provider '{provider.name}' answered a streamed request with {kind} instead of server-sent events.",
        )
    recorder.finish(status=error.status, error_code=error.code)
    out = error_response(error, fmt)
    _copy_headers(response, out)
    return out


def _translated_answer(parsed: Any, exchange: Exchange, recorder: UsageRecorder) -> bytes:
    """The client's JSON for the upstream's, or b"" when it cannot be read."""
    assert exchange.answer_json is not None
    if not isinstance(parsed, dict):
        return b""
    try:
        return orjson.dumps(exchange.answer_json(parsed))
    except Exception:
        log.warning("an answer from %s could not be translated", recorder.target.provider.name, exc_info=True)
        return b""


async def _upstream_error(
    response: aiohttp.ClientResponse, recorder: UsageRecorder, provider: ProviderConfig, fmt: ApiFormat
) -> tuple[HttpResponse, str]:
    """The provider said no: same status and message, in the client's
    envelope, and the error's code. Recording is the caller's (it knows
    whether another attempt follows).

    A 401/403 from the provider means the gateway's credential is wrong, not
    the client's key, so the client sees a 502 instead.
    """
    try:
        # An error's message is cut to a few thousand characters anyway.
        raw = await read_bounded(response, provider.name, limit=_MAX_ERROR_BODY)
    except (TimeoutError, aiohttp.ClientError, UpstreamTooLargeError):
        raw = b""
    except BaseException:  # the client left while the error body was read
        recorder.finish(status=response.status, error_code="client_disconnected", client_disconnected=True)
        raise
    finally:
        response.release()
    message, code, param = _upstream_error_details(raw, provider)
    status = response.status
    if status in (401, 403):
        status, code = 502, "upstream_auth_failed"
        message = f"The provider '{provider.name}' rejected the gateway's credential."
    elif status == 529 and fmt is not ApiFormat.ANTHROPIC:
        status = 503  # Anthropic's own "overloaded": other APIs' clients know 503
    error = GatewayError(status, code, message, param=param)
    out = error_response(error, fmt)
    _copy_headers(response, out)
    return out, code


def _upstream_error_details(raw: bytes, provider: ProviderConfig) -> tuple[str, str, str | None]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        message = str(error.get("message") or "")
        code = error.get("code") if isinstance(error.get("code"), str) else error.get("type")
        param = error.get("param") if isinstance(error.get("param"), str) else None
    else:
        message = str(error) if isinstance(error, str) else raw.decode("utf-8", "replace")
        code, param = None, None
    # Redact, then cut: cut first, a key straddling the cut would lose the
    # tail the patterns need and leak its first half.
    message = _redact(message.strip(), provider)[:_MAX_UPSTREAM_MESSAGE] or "The provider returned an error."
    return f"Upstream error from '{provider.name}': {message}", code or "upstream_error", param


def _redact(text: str, provider: ProviderConfig) -> str:
    if provider.api_key:
        text = text.replace(provider.api_key, "[redacted]")
    return _SECRET_LIKE.sub("[redacted]", text)


def _copy_headers(source: aiohttp.ClientResponse, target: HttpResponseBase) -> None:
    for name in _FORWARDED_HEADERS:
        value = source.headers.get(name)
        if value is not None:
            target[name] = value
