"""Turns one request's observations into exactly one UsageEvent: the record step.

`usage_event` is the one place an event is built, whatever happened: an
answer relayed or passed through, an upstream error, a client gone, a
shutdown, or a cache hit (`cache_hit_recorded`). `UsageRecorder.finish`
builds it once per request and settles it, one small step per side effect:
the budget reservation, the meter, the trace, the rate limit, the cache fill.
"""

import datetime as dt
import time
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.utils import timezone

from billing.caps import Reservation, SpendCap, spend_caps
from billing.guard import spend_guard
from billing.meter import meter
from billing.pricing import cost_nanos, worst_case_cost_nanos
from gateway.kernel.context import PriceSnapshot, RouteTarget, TenantContext, Usage, UsageEvent, estimate_tokens
from gateway.kernel.errors import GatewayError
from proxy.apis.registry import spec_for
from proxy.capacity import capacity_settle
from proxy.capacity_windows import Grant
from proxy.dialects import ClientCall, Dialect
from proxy.providers.base import StreamObserver
from proxy.ratelimit import rate_limit_release

if TYPE_CHECKING:
    from proxy.caching import CacheFill
    from proxy.guardrails.run import GuardrailRun
    from proxy.ratelimit import Admission
    from proxy.telemetry_spans import AttemptSpan
    from proxy.tracing import TraceCapture

_TOKENS_PER_MESSAGE = 4  # role and framing tokens each chat message costs


def estimate_prompt_tokens(dialect: Dialect, body: dict[str, Any]) -> int:
    """A prompt estimate for when the upstream never reported usage: every
    text the request sends, as its API's module locates them, and a few
    tokens for each message it frames."""
    texts = spec_for(dialect).texts
    return estimate_tokens(texts.prompt_chars(body)) + _TOKENS_PER_MESSAGE * texts.turns(body)


def output_limit(body: dict[str, Any], target: RouteTarget) -> int:
    """The most output tokens this request can produce (for every one of its `n` choices)."""
    n = body.get("n")
    choices = n if isinstance(n, int) and n > 1 else 1
    for name in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        if isinstance(body.get(name), int):
            return int(body[name]) * choices
    if target.price is not None and target.price.max_output_tokens:
        return target.price.max_output_tokens * choices
    return settings.BILLING_DEFAULT_MAX_OUTPUT_TOKENS * choices


async def reserve_worst_case(
    ctx: TenantContext,
    target: RouteTarget,
    body: dict[str, Any],
    *,
    dialect: Dialect,
    prompt_bytes: int,
    output_tokens: int | None = None,
    media: Any = None,
) -> Reservation | None:
    """Reserve the request's worst-case cost against every budget and the
    prepaid credit that cover it; raises budget_exceeded or
    insufficient_credit. Text cannot have more tokens than bytes, so the
    body's size bounds the prompt from above, plus a fixed allowance for each
    image, audio or file part (as `dialect`'s module counts them). A media
    endpoint's call (`media`, a proxy.media.MediaCall) reserves its seconds,
    characters or images too."""
    return await reserve_spend(
        worst_case(
            ctx, target, body, dialect=dialect, prompt_bytes=prompt_bytes, output_tokens=output_tokens, media=media
        )
    )


async def reserve_spend(spend: tuple[tuple[SpendCap, ...], int] | None) -> Reservation | None:
    """Reserve a worst case worked out already (see worst_case); None: it has no cap."""
    return None if spend is None else await spend_guard().reserve(*spend)


def call_worst_case(
    ctx: TenantContext, target: RouteTarget, call: ClientCall
) -> tuple[tuple[SpendCap, ...], int] | None:
    """worst_case for a client's call as sent to `target` (its media
    reserve their seconds, characters, images: proxy.media)."""
    return worst_case(
        ctx,
        target,
        call.body,
        dialect=call.dialect,
        prompt_bytes=call.size,
        output_tokens=call.output_tokens,
        media=call.media,
    )


def worst_case(
    ctx: TenantContext,
    target: RouteTarget,
    body: dict[str, Any],
    *,
    dialect: Dialect,
    prompt_bytes: int,
    output_tokens: int | None = None,
    media: Any = None,
) -> tuple[tuple[SpendCap, ...], int] | None:
    """The caps a request must fit under and its worst-case cost (None: it
    has no cap); raises model_not_priced (see reserve_worst_case)."""
    caps = spend_caps(ctx, timezone.now())
    if not caps:
        return None
    if target.price is None and settings.BILLING_UNPRICED_POLICY != "allow":
        # Unpriced, it would cost 0: a budget or prepaid credit would be no limit at all.
        raise GatewayError(
            400,
            "model_not_priced",
            f"The model '{target.public_model}' ({target.upstream_model} at {target.provider.name}) has no price, "
            "and this key has a budget or prepaid credit. Ask an administrator to set its price (price_set).",
            param="model",
        )
    output = output_limit(body, target) if output_tokens is None else output_tokens
    if media is not None:
        from proxy.media import worst_case_nanos  # loaded with the first media request

        amount = worst_case_nanos(media, target.price, request_bytes=prompt_bytes, output_tokens=output)
    else:
        parts = spec_for(dialect).texts.media_parts(body)
        prompt = prompt_bytes + parts * settings.BILLING_MEDIA_PART_MAX_TOKENS
        amount = worst_case_cost_nanos(target.price, prompt_tokens=prompt, output_tokens=output)
    return caps, amount


class UsageRecorder:
    """Follows one upstream request and pushes its usage event exactly once.

    It is registered with the meter while the request is open, so a server
    shutdown that cannot wait for it still records what was observed.
    """

    def __init__(
        self,
        *,
        ctx: TenantContext,
        target: RouteTarget,
        endpoint: str,
        dialect: Dialect,
        request_id: str,
        body: dict,
        observer: StreamObserver | None = None,
        reservation: Reservation | None = None,
        fill: "CacheFill | None" = None,
        admission: "Admission | None" = None,
        trace: "TraceCapture | None" = None,
        purpose: str = "",
        guardrails: "GuardrailRun | None" = None,
    ) -> None:
        self.ctx = ctx
        self.guardrails = guardrails  # the request's guardrails (proxy.guardrails): output guards, verdicts
        self.purpose = purpose  # UsageEvent.purpose: a call the gateway makes itself (routing...)
        self.trace = trace  # a sampled request's capture (proxy.tracing); None: not traced
        self.otel: AttemptSpan | None = None  # OpenTelemetry: this attempt's CLIENT span (proxy.telemetry)
        self.reservation = reservation
        self.fill = fill  # a cache miss to store once the answer completes
        self.admission = admission  # rate-limit counters held until the request ends
        self.capacity: Grant | None = None  # room in the deployment's upstream limits (proxy.capacity)
        self.target = target
        self.endpoint = endpoint
        self.dialect = dialect  # the API `body` is a request of (its texts: the prompt estimate)
        self.request_id = request_id
        self.stream = observer is not None
        self.body = body
        self.observer = observer  # a stream's usage and output so far
        self.created_at = timezone.now()
        self.started = time.perf_counter()
        self.first_token_at: float | None = None
        self.recorded = False
        meter.track(self)

    def first_token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()

    def finish(
        self,
        *,
        status: int,
        usage: Usage | None = None,
        error_code: str = "",
        client_disconnected: bool = False,
        body: bytes | None = None,
        price: PriceSnapshot | None = None,
        usage_estimated: bool = False,
    ) -> UsageEvent | None:
        """Record the request once; `body` is a JSON answer's bytes (for the
        cache); `price`, the one the answer is billed at when it is not the
        target's (an image's size and quality: proxy.media); `usage_estimated`:
        `usage` is the gateway's count (a stream it cut), not the provider's."""
        if self.recorded:
            return None
        self.recorded = True
        meter.untrack(self)
        output_chars = 0
        if self.observer is not None:
            usage = usage or self.observer.usage
            output_chars = self.observer.output_chars
        estimated = (usage is None and status < 400) or usage_estimated
        if usage is None:
            usage = self._estimate(output_chars) if estimated else Usage()
        event = usage_event(
            self.ctx,
            self.target,
            request_id=self.request_id,
            created_at=self.created_at,
            endpoint=self.endpoint,
            status=status,
            usage=usage,
            cost=cost_nanos(usage, price or self.target.price, answered=status < 400),
            started=self.started,
            first_token_at=self.first_token_at,
            stream=self.stream,
            error_code=error_code,
            usage_estimated=estimated,
            client_disconnected=client_disconnected,
            cache_status="" if self.fill is None else ("miss" if self.fill.policy.lookup else "bypass"),
            purpose=self.purpose,
            guardrails="" if self.guardrails is None else self.guardrails.summary(),
            **({} if price is None else {"price_id": price.price_id}),
        )
        self._settle(event, body, succeeded=status == 200 and not error_code and not client_disconnected)
        return event

    def _settle(self, event: UsageEvent, body: bytes | None, *, succeeded: bool) -> None:
        if self.reservation is not None:  # the worst case held against budgets becomes the real cost
            spend_guard().settle_soon(self.reservation, event.cost_nanos)
        meter.push(event)  # journaled, then stored in the next batch
        if self.trace is not None:  # tracing: the attempt's outcome (and a JSON answer's bytes)
            self.trace.attempt_finished(event, body)
        if self.otel is not None:  # OpenTelemetry: the attempt's span ends (a stream's at its end)
            self.otel.finished(event, self.trace)
        rate_limit_release(self.admission, event.usage.total_tokens)
        capacity_settle(self.capacity, event.usage.total_tokens)
        if self.fill is not None:
            self._fill_cache(event, succeeded, body)

    def _fill_cache(self, event: UsageEvent, succeeded: bool, body: bytes | None) -> None:
        """Store a complete answer; never an error or a cut-off stream."""
        assert self.fill is not None
        if succeeded and body is not None:
            self.fill.complete(body, event)
        elif succeeded and self.observer is not None and self.observer.finished:
            self.fill.complete(None, event)
        else:
            self.fill.fail()

    def prompt_tokens(self) -> int:
        """The request's prompt, estimated (for when the upstream never says)."""
        return estimate_prompt_tokens(self.dialect, self.body)

    def _estimate(self, output_chars: int) -> Usage:
        return Usage(input_tokens=self.prompt_tokens(), output_tokens=estimate_tokens(output_chars))

    def abandon(self) -> None:
        """Server shutdown: record what was seen, flagged as estimated."""
        self.finish(status=200, error_code="server_shutdown")


def usage_event(
    ctx: TenantContext,
    target: RouteTarget,
    *,
    request_id: str,
    created_at: dt.datetime,
    endpoint: str,
    status: int,
    usage: Usage,
    cost: int,
    started: float,
    first_token_at: float | None = None,
    stream: bool,
    **outcome: Any,
) -> UsageEvent:
    """The usage event of one request (`outcome`: error_code, usage_estimated,
    client_disconnected, cache_hit, cache_status, saved_nanos, price_id,
    purpose, guardrails)."""
    price_id = outcome.pop("price_id", None if target.price is None else target.price.price_id)
    return UsageEvent(
        request_id=request_id,
        created_at=created_at,
        tenant_id=ctx.tenant_id,
        key_id=ctx.key_id,
        endpoint=endpoint,
        public_model=target.public_model,
        upstream_model=target.upstream_model,
        provider=target.provider.name,
        status_code=status,
        usage=usage,
        cost_nanos=cost,
        price_id=price_id,
        latency_ms=int((time.perf_counter() - started) * 1000),
        ttft_ms=None if first_token_at is None else int((first_token_at - started) * 1000),
        stream=stream,
        **outcome,
    )


def cache_hit_recorded(
    ctx: TenantContext,
    target: RouteTarget,
    *,
    request_id: str,
    endpoint: str,
    stream: bool,
    started: float,
    saved_nanos: int,
    price_id: int | None,
    guardrails: str = "",
) -> UsageEvent:
    """A cache hit's event, pushed: billed at zero, with the cost it saved."""
    event = usage_event(
        ctx,
        target,
        request_id=request_id,
        created_at=timezone.now(),
        endpoint=endpoint,
        status=200,
        usage=Usage(),
        cost=0,
        started=started,
        stream=stream,
        cache_hit=True,
        cache_status="hit",
        saved_nanos=saved_nanos,
        price_id=price_id,
        guardrails=guardrails,
    )
    meter.push(event)
    return event
