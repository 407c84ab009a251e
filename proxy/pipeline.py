"""The request path: every /v1 and Ollama request, top to bottom.

    prepare   authenticate (accounts.auth) -> parse (proxy.dialects) -> route
              (a smart router's designator first: proxy.routers; then the
              names proxy.routing resolves)
    state     a Responses call's earlier turns, when it names a previous
              response the gateway stored (proxy.responses_state)
    admit     rate limits, requests in flight and, ahead, the first
              deployment's budget reservation: one Redis call (proxy.ratelimit)
    cache     the exact cache (proxy.caching), then, on a miss, the semantic
              cache (proxy.semantic); a hit is answered and recorded here
    augment   an augmentor's designator decides whether to search the web or
              scrape pages; what was found joins the prompt (proxy.augment)
    forward   reserve the worst case against budgets and credit, then the
              attempts, retries and fallbacks upstream (proxy.forward), relayed
              as the answer arrives (proxy.streaming)
    record    one UsageEvent however the request ends (proxy.usage), then the
              settling steps: budget, meter, trace, rate limit, cache fill

`prepare` is done once per request: the cache lane in front of Django
(gateway.cache_lane) prepares, answers a hit itself, and on a miss leaves the
`Prepared` request in the ASGI scope, where the view takes it instead of
authenticating, parsing, routing, hashing and reading the cache again.

Where later features plug in, each as a step of `handle`: routing decisions
in `route` (smart routers come first: see its docstring for the order); a
second lookup (the semantic cache) after the exact one in `cache`; input
guardrails and prompt augmentation after the cache and before `forward`, so
nothing leaves unchecked; output guardrails on the relay; spans around each
step.
"""

from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.http.response import HttpResponseBase

from cachestore.entry import CachedEntry
from gateway.kernel.context import PREPARED_SCOPE_KEY, RoutePlan, RouteTarget, TenantContext, caller
from gateway.kernel.errors import GatewayError
from gateway.kernel.requestid import request_id_for
from proxy import telemetry
from proxy.apis.registry import spec_for
from proxy.augment import AUGMENTED_HEADER, Augmented, augment
from proxy.caching import (
    HitAnswer,
    cache_hit_answer,
    cache_hit_response,
    cache_lookup,
    cache_lookup_policy,
    cache_peek,
)
from proxy.catalog import current_catalog
from proxy.dialects import ClientCall, Dialect
from proxy.exchange import native_dialects
from proxy.forward import Attempts
from proxy.guardrails.run import GuardrailRun, guardrail_run
from proxy.ratelimit import Spend, rate_limit_admit, rate_limit_release, tokens_estimate
from proxy.responses_state import conversation_resolved
from proxy.routers import ROUTED_HEADER, routed_plan
from proxy.routing import Augmentor, Catalog, augmented_plan, plan_for
from proxy.semantic import semantic_probe
from proxy.telemetry_spans import RequestSpan
from proxy.tracing import trace_start
from proxy.usage import call_worst_case

ESTIMATE_HEADER = "x-gateway-token-count"


@dataclass(slots=True)
class Prepared:
    """One request once authenticated, parsed and routed: what every later
    step reads. The cache lane fills `cache_key` and `cache_read` when it has
    looked the request up, so the view neither hashes nor reads again."""

    ctx: TenantContext
    call: ClientCall
    request_id: str
    cache_control: str
    catalog: Catalog
    plan: RoutePlan
    cache_key: str | None = None
    cache_read: bool = False  # the store was read for this key and held no hit
    routed_to: str = ""  # the candidate a smart router chose ("": the name asked was routed as is)
    augmentor: Augmentor | None = None  # the augmentor asked for (proxy.augment); None: none
    # The input guardrails' run and the call they let through, when they ran
    # before a smart router's designator saw the query (see `prepare`).
    input_checked: "tuple[GuardrailRun | None, ClientCall] | None" = None
    span: "RequestSpan | None" = None  # OpenTelemetry's (proxy.telemetry); None: off
    # The worst case the admission worked out (target, call, spend), for the
    # first attempt to take as it is when it forwards the same call there.
    worked_out: "tuple[RouteTarget, ClientCall, Spend | None] | None" = None


async def prepare(ctx: TenantContext, call: ClientCall, request_id: str, *, cache_control: str = "") -> Prepared:
    """Route an authenticated, parsed request (raises the refusals: unknown
    model, a model the key may not use)."""
    span = telemetry.request_span(ctx, call, request_id) if telemetry.active else None
    catalog = await current_catalog()
    checked = None
    if call.body["model"] in catalog.routers:
        # A designator is a provider too: it sees the query only as the input
        # guardrails let it through (a block refuses here, before it is asked).
        guardrails = guardrail_run(catalog.guardrails, ctx, call.dialect, request_id)
        checked = (guardrails, call if guardrails is None else guardrails.check_input(call))
    plan, routed_to = await route(catalog, ctx, call if checked is None else checked[1], request_id)
    if span is not None:
        span.routed()  # the prepare step's span ends: authenticated, parsed, routed
    # The augmentor asked for, or the one a smart router chose (a router's
    # name is asked first: an augmentor of the same name is hidden).
    augmentor = catalog.augmentors.get(routed_to or call.body["model"])
    return Prepared(
        ctx,
        call,
        request_id,
        cache_control,
        catalog,
        plan,
        routed_to=routed_to,
        augmentor=augmentor,
        input_checked=checked,
        span=span,
    )


async def route(catalog: Catalog, ctx: TenantContext, call: ClientCall, request_id: str) -> tuple[RoutePlan, str]:
    """The plan for the model asked, and the candidate a smart router chose
    ("" when none did). The resolution order: a smart router first (its
    designator picks the candidate, which resolves as any name: proxy.routers);
    then, in `handle`, the exact and semantic cache and augmentation, for the
    plan chosen here; an augmentor is served by its target's plan (its
    designator is asked in `handle`, after the cache), and so is a router's
    candidate that is an augmentor; names that are neither
    resolve through proxy.routing: exact route, alias, wildcard route,
    provider prefix."""
    router = catalog.routers.get(call.body["model"])
    if router is not None:
        return await routed_plan(catalog, ctx, router, call, request_id)
    augmentor = catalog.augmentors.get(call.body["model"])
    if augmentor is not None:
        return augmented_plan(catalog, ctx, augmentor), ""
    return plan_for(catalog, ctx, call.body["model"]), ""


async def prepared_for(request: HttpRequest, parse: Any) -> Prepared:
    """The view's request: the one the cache lane prepared, or prepared now
    from `request.auth` and `parse(request)`."""
    stashed = getattr(request, "scope", {}).get(PREPARED_SCOPE_KEY)
    if isinstance(stashed, Prepared):
        return stashed
    ctx = caller(request)
    call = parse(request)
    return await prepare(ctx, call, request_id_for(request), cache_control=request.headers.get("Cache-Control", ""))


async def handle(p: Prepared, *, force_cache: bool = False) -> HttpResponseBase:
    """Admit, answer from the cache when it may, else forward; the rate-limit
    headers on whatever the answer is."""
    if p.call.dialect is Dialect.COUNT_TOKENS and not _counted_upstream(p.plan):
        return _count_tokens_estimated(p.call)
    if p.call.dialect is Dialect.RESPONSES:  # the conversation a previous_response_id names, before it is counted
        p.call = await conversation_resolved(p.ctx, p.call)
    span = p.span  # OpenTelemetry: each step a child span (off: None, and the steps are awaited as they are)
    admit = rate_limit_admit(p.ctx, tokens=tokens_estimate(p.call.body, p.call.size), spend=lambda: _spend_ahead(p))
    admission = await (admit if span is None else span.step("admit", admit))
    fill = None
    try:
        lookup = _cache(p, forced=force_cache) if spec_for(p.call.dialect).cacheable else None
        cache = None if lookup is None else await (lookup if span is None else span.step("cache", lookup))
        if cache is not None and cache.entry is not None:
            response = cache_hit_response(_hit(p, cache.entry, similarity=cache.similarity))
            rate_limit_release(admission)
        else:
            fill = cache.fill if cache is not None else None
            guardrails = _guard_input(p)  # a block raises guardrail_blocked: nothing leaves for a provider
            # Tracing: off (rate 0) costs this one attribute check.
            trace = (
                trace_start(p.ctx, p.request_id, p.call.dialect.value, p.call.body) if p.ctx.trace_sample_rate else None
            )
            augmented = None if p.augmentor is None else await _augment(p, p.augmentor, guardrails)
            if augmented is not None and trace is not None:
                trace.augmentation = augmented.steps  # the searches and scrapes, beside the client's request
            attempts = Attempts(
                p.ctx,
                p.call,
                p.request_id,
                fill,
                admission,
                trace,
                span=span,
                guardrails=guardrails,
                worked_out=p.worked_out,
            )
            run = attempts.run(p.catalog, p.plan)
            response = await (run if span is None else span.forward(run))
            if cache is not None:
                response["x-cache"] = cache.status
            if augmented is not None:
                response[AUGMENTED_HEADER] = augmented.label
    except BaseException:
        if fill is not None:
            fill.fail()  # identical requests waiting on this one go upstream themselves
        rate_limit_release(admission)  # a no-op once the request's recorder released it
        raise
    for name, value in (admission.headers if admission else {}).items():
        response[name] = value
    if p.routed_to:
        response[ROUTED_HEADER] = p.routed_to
    return response


async def hit_only(p: Prepared) -> HitAnswer | None:
    """handle()'s answer when it would be a cache hit, else None, for the
    cache lane. The same steps in an order that costs nothing but the lookup
    when there is no hit: look up, then admit under the rate limits (a
    refusal raises, as in handle()). A miss is remembered on `p`."""
    policy = cache_lookup_policy(p.ctx, cache_control=p.cache_control)
    if not spec_for(p.call.dialect).cacheable or policy is None:
        return None
    peek = cache_peek(p.ctx, p.plan.deployments[0], p.call.body, endpoint=p.call.dialect.value, policy=policy)
    entry, p.cache_key = await (peek if p.span is None else p.span.step("cache", peek))
    if entry is None:
        p.cache_read = policy.lookup
        return None
    admit = rate_limit_admit(p.ctx, tokens=tokens_estimate(p.call.body, p.call.size))
    admission = await (admit if p.span is None else p.span.step("admit", admit))
    try:
        answer = _hit(p, entry)
    finally:
        rate_limit_release(admission)
    if admission is not None:
        answer.headers.update(admission.headers)
    if p.routed_to:
        answer.headers[ROUTED_HEADER] = p.routed_to
    return answer


async def _cache(p: Prepared, *, forced: bool) -> Any:
    # Deployments of a route are interchangeable: the cache keys on the first.
    return await cache_lookup(
        p.ctx,
        p.plan.deployments[0],
        p.call.body,
        endpoint=p.call.dialect.value,
        cache_control=p.cache_control,
        forced=forced,
        key=p.cache_key,
        read=not p.cache_read,
        semantic=semantic_probe(
            p.ctx, p.catalog, p.call, p.plan.deployments[0], p.request_id, checked=lambda: _input_checked_call(p)
        ),
    )


async def _augment(p: Prepared, augmentor: Augmentor, guardrails: GuardrailRun | None) -> Augmented:
    """The augment step: the designator sees the call as the input
    guardrails let it through, and so does the target what was found
    (a redaction, or a block that drops it); it is forwarded in `p.call`."""
    step = augment(p.catalog, p.ctx, augmentor, p.call, p.request_id, guardrails)
    augmented = await (step if p.span is None else p.span.step("augment", step))
    p.call = augmented.call
    return augmented


def _spend_ahead(p: Prepared) -> Spend | None:
    """The first deployment's worst case, reserved in the admission's Redis
    call: the attempt takes it instead of calling again, a hit gives it back."""
    target, call = p.plan.deployments[0], p.call
    try:
        spend = call_worst_case(p.ctx, target, call)
    except GatewayError:
        return None  # refused where it always is, by the attempt
    p.worked_out = (target, call, spend)  # caps and price walked once per request, not again by the attempt
    return spend


def _input_checked_call(p: Prepared) -> ClientCall:
    """The call as the input guardrails let it through, checked once (a
    block raises): for a step that sends the prompt somewhere before
    `forward` (the semantic cache's embedding), which `_guard_input` reuses."""
    if p.input_checked is None:
        guardrails = guardrail_run(p.catalog.guardrails, p.ctx, p.call.dialect, p.request_id)
        p.input_checked = (guardrails, p.call if guardrails is None else guardrails.check_input(p.call))
    return p.input_checked[1]


def _guard_input(p: Prepared) -> GuardrailRun | None:
    """The request's guardrails (proxy.guardrails), input checked: a block
    raises guardrail_blocked, a redaction replaces the call to forward."""
    if p.input_checked is not None:  # checked once already, before the designator
        guardrails, p.call = p.input_checked
        return guardrails
    guardrails = guardrail_run(p.catalog.guardrails, p.ctx, p.call.dialect, p.request_id)
    if guardrails is not None:
        p.call = guardrails.check_input(p.call)
    return guardrails


def _hit(p: Prepared, entry: CachedEntry, *, similarity: float | None = None) -> HitAnswer:
    guardrails = guardrail_run(p.catalog.guardrails, p.ctx, p.call.dialect, p.request_id)
    answer = cache_hit_answer(
        p.ctx,
        p.plan.deployments[0],
        entry,
        p.call.body,
        request_id=p.request_id,
        stream=p.call.stream,
        guard=None if guardrails is None else guardrails.cache_hit,  # output guardrails on the stored answer
        similarity=similarity,
    )
    if p.span is not None:
        p.span.cache_hit(p.plan.deployments[0], entry, answer)
    return answer


def _counted_upstream(plan: RoutePlan) -> bool:
    return all(Dialect.COUNT_TOKENS in native_dialects(t.provider.kind) for t in plan.deployments)


def _count_tokens_estimated(call: ClientCall) -> JsonResponse:
    """Only Anthropic counts tokens for real; for others it is estimated,
    and the answer says so."""
    from proxy.translate.count_tokens import count_tokens_estimate  # loaded on use (proxy.exchange)

    response = JsonResponse({"input_tokens": count_tokens_estimate(call.body)})
    response[ESTIMATE_HEADER] = "estimated"
    return response
