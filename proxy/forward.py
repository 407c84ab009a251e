"""The pipeline's forward step (proxy.pipeline): one request upstream.

For each attempt: pick a deployment (proxy.attempt_targets) -> reserve the
worst case against budgets -> call the provider in its own dialect
(proxy.exchange) -> relay (stream: proxy.streaming) or pass through (JSON:
proxy.json_relay), translating when the dialects differ, or the provider's
error in the client's envelope (proxy.upstream_errors) -> one usage event,
however it ends (proxy.usage). Retries and fallbacks happen only before the
first byte reaches the client.
"""

import asyncio
import functools
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from django.conf import settings
from django.http import HttpResponse
from django.http.response import HttpResponseBase

from gateway.kernel.context import ProviderConfig, RoutePlan, RouteTarget, TenantContext
from gateway.kernel.errors import GatewayError
from proxy.apis.registry import spec_for
from proxy.attempt_targets import breaker_report, healthy_choice, longest_open, soonest_retry
from proxy.breaker import breaker, target_key
from proxy.caching import (
    CacheFill,
)
from proxy.capacity import capacity_outcome, capacity_refusal, capacity_settle
from proxy.capacity_windows import Grant
from proxy.dialects import ClientCall
from proxy.exchange import (
    NOTES_HEADER,
    Exchange,
    exchange_for,
    native_fallback,
    native_missing_remember,
)
from proxy.guardrails.run import GuardrailRun
from proxy.json_relay import not_a_stream, pass_through
from proxy.ratelimit import Admission, Spend, tokens_estimate
from proxy.retry import RetryPolicy, no_healthy_upstream, retry_policy
from proxy.routing import Catalog
from proxy.streaming import RelayResponse
from proxy.telemetry_spans import AttemptSpan, RequestSpan
from proxy.timing import upstream_waited
from proxy.tracing import TraceCapture
from proxy.upstream import upstream_failure, upstream_session
from proxy.upstream_errors import upstream_error
from proxy.usage import UsageRecorder, call_worst_case, reserve_spend

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
    # The worst case worked out with the admission (target, call, spend; proxy.pipeline): the
    # attempt that forwards that call there reserves it as it is rather than work it out again.
    worked_out: tuple[RouteTarget, ClientCall, Spend | None] | None = None
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
        if failure is None and (target := longest_open(plans, tried, circuit)) is not None:
            # Every deployment's circuit is open: send anyway, to the one open
            # longest (Envoy's panic mode). Refusing would turn one upstream's
            # blip into a cooldown-long outage of every model it serves.
            self.count += 1
            outcome = await self._attempt(target, policy, circuit)
            if isinstance(outcome, HttpResponseBase):
                return self._annotated(outcome, target)
            failure = outcome
        if failure is None:
            error = no_healthy_upstream(plan.public_model, soonest_retry(plans, circuit))
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
            target, grant, retry_in = await healthy_choice(plan, tried, circuit, tokens)
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

    def _worst_case(self, target: RouteTarget) -> Spend | None:
        """The caps this attempt reserves against and its worst-case cost
        (raises model_not_priced): the admission's when it was worked out for
        this target and call (not redacted since), else worked out now."""
        known, call = self.worked_out, self.call
        if known is not None and known[0] is target and known[1] is call:
            return known[2]
        return call_worst_case(self.ctx, target, call)

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
            reservation = await reserve_spend(self._worst_case(target))
        except BaseException:
            capacity_settle(grant, -1)  # refused before anything was sent: its room back
            raise
        fmt = spec_for(call.dialect).error_format
        recorder = UsageRecorder(
            ctx=ctx,
            target=target,
            endpoint=call.dialect.value,
            dialect=call.dialect,
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
                await breaker_report(circuit, key, failed=True)
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
            await breaker_report(circuit, key, failed=failed)
        if response.status >= 400:
            error_response, code = await upstream_error(response, recorder, target.provider, fmt)
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
            return await not_a_stream(response, recorder, fmt)
        else:
            out = await pass_through(response, recorder, exchange, fmt, sent)
        if exchange.notes:
            out[NOTES_HEADER] = exchange.notes_header()
        return out


async def _post(exchange: Exchange, target: RouteTarget, otel: AttemptSpan | None) -> aiohttp.ClientResponse:
    upstream = exchange.request
    headers = upstream.headers if otel is None else otel.headers(upstream.headers)  # with its traceparent
    return await upstream_session().post(
        upstream.url, data=upstream.body, headers=headers, timeout=_timeouts(target.provider)
    )


@functools.lru_cache(maxsize=256)
def _timeouts_for(connect: float, first_byte: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=first_byte)


def _timeouts(provider: ProviderConfig) -> aiohttp.ClientTimeout:
    """Connect, then the wait for the response headers; no total limit (a
    stream that keeps moving may run for minutes)."""
    return _timeouts_for(provider.connect_timeout, provider.first_byte_timeout)
