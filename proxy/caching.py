"""The response cache on the request path: look up, serve hits, fill on misses.

A hit is answered from the cache in the form the client asked for (JSON or
a stream, whichever form was stored) and leaves a usage record flagged as a
cache hit, billed at zero, with the cost it saved. A miss goes upstream;
when its answer completes successfully it is stored, and identical requests
that waited for it (singleflight) are served from it. Errors and cut-off
streams are never stored. With the key's semantic cache on, an exact miss
asks it next (proxy.semantic); its hit is served the same way, saying how
similar the question was.
"""

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from django.conf import settings
from django.http import HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase

from cachestore.entry import CachedEntry
from cachestore.flight import Flight, Landed, lead_or_follow
from cachestore.keys import cache_key
from cachestore.policy import CachePolicy, cache_policy
from cachestore.replay import completion_from_events, events_from_completion, recorded_events
from cachestore.store import cache_store
from gateway.kernel.context import RouteTarget, TenantContext, UsageEvent
from proxy.usage import cache_hit_recorded

if TYPE_CHECKING:
    from proxy.semantic import SemanticProbe, SemanticQuery

MATCH_HEADER = "x-cache-match"  # exact or semantic, on a hit
SIMILARITY_HEADER = "x-cache-similarity"  # a semantic hit's cosine similarity, 3 decimals

log = logging.getLogger(__name__)


@dataclass
class CacheLookup:
    status: str  # what the response's x-cache says: hit, miss or bypass
    entry: CachedEntry | None = None
    fill: "CacheFill | None" = None
    similarity: float | None = None  # a semantic hit's; None: an exact hit (or no hit)


async def cache_lookup(
    ctx: TenantContext,
    target: RouteTarget,
    body: dict[str, Any],
    *,
    endpoint: str,
    cache_control: str,
    forced: bool,
    key: str | None = None,
    read: bool = True,
    semantic: "SemanticProbe | None" = None,
) -> CacheLookup:
    """`key`: the request's cache key when it was hashed already; `read`
    False when the store was read for it already and held no hit (the cache
    lane's peek), so only the singleflight is asked. `semantic`: the key's
    semantic cache, asked when the exact cache has no answer, by the leader
    of identical requests only (its followers take what it finds)."""
    policy = cache_lookup_policy(ctx, cache_control=cache_control, forced=forced)
    if policy is None:
        return CacheLookup("bypass")
    store = cache_store()
    key = key or _key(ctx, target, body, endpoint)
    if not policy.lookup:  # no-cache: go upstream, refresh the entry
        flight = Flight(tenant_id=ctx.tenant_id, key=key, future=_detached_future(), store=store, write=policy.write)
        return CacheLookup(
            "bypass", fill=CacheFill(ctx, target, endpoint, key, policy, flight, request=orjson.dumps(body))
        )
    entry = await _stored_hit(ctx, key, policy) if read else None
    if entry is not None:
        return CacheLookup("hit", entry=entry)
    if not policy.write:
        found = (await _semantic_hit(ctx, semantic, policy))[1] if semantic is not None else None
        return found or CacheLookup("miss")
    led = await lead_or_follow(store, ctx.tenant_id, key)
    if isinstance(led, Landed):  # the leader's answer: its own, or the earlier one it found by meaning
        return CacheLookup("hit", entry=led.entry, similarity=led.similarity)
    if led is None:  # the leader failed: go upstream, and store this answer
        led = Flight(tenant_id=ctx.tenant_id, key=key, future=_detached_future(), store=store)
    query = None
    if semantic is not None:
        try:
            query, found = await _semantic_hit(ctx, semantic, policy)
        except BaseException:
            led.land(None)  # refused (a spent budget) or cancelled: followers go on by themselves
            raise
        if found is not None and found.entry is not None:
            led.write = False  # followers are served the same answer; it stays stored under its own key
            led.land(found.entry, similarity=found.similarity)
            return found
    fill = CacheFill(ctx, target, endpoint, key, policy, led, semantic=query, request=orjson.dumps(body))
    return CacheLookup("miss", fill=fill)


async def _semantic_hit(
    ctx: TenantContext, semantic: "SemanticProbe", policy: CachePolicy
) -> "tuple[SemanticQuery | None, CacheLookup | None]":
    """The question embedded, and a hit when an earlier answer of this
    tenant's is near enough and still fresh for this policy."""
    query, match = await semantic.lookup()
    if match is None:
        return query, None
    entry = await _stored_hit(ctx, match.entry_key, policy)
    return query, None if entry is None else CacheLookup("hit", entry=entry, similarity=match.similarity)


def cache_lookup_policy(ctx: TenantContext, *, cache_control: str, forced: bool = False) -> CachePolicy | None:
    """What the cache may do for this key and Cache-Control (None: nothing)."""
    return cache_policy(
        key_ttl_seconds=ctx.cache_ttl_seconds,
        cache_control=cache_control,
        forced=forced,
        default_ttl=settings.CACHESTORE_DEFAULT_TTL_SECONDS,
    )


async def cache_peek(
    ctx: TenantContext, target: RouteTarget, body: dict[str, Any], *, endpoint: str, policy: CachePolicy
) -> tuple[CachedEntry | None, str]:
    """The entry cache_lookup would serve as a hit, if one is stored now,
    and the request's key; no singleflight, nothing filled (the cache lane's
    question)."""
    key = _key(ctx, target, body, endpoint)
    return (await _stored_hit(ctx, key, policy) if policy.lookup else None), key


async def _stored_hit(ctx: TenantContext, key: str, policy: CachePolicy) -> CachedEntry | None:
    """The stored entry under `key`, if the policy accepts it as a hit."""
    entry = await cache_store().get(ctx.tenant_id, key)
    return entry if entry is not None and _acceptable(entry, policy) else None


def _key(ctx: TenantContext, target: RouteTarget, body: dict[str, Any], endpoint: str) -> str:
    return cache_key(
        tenant_id=ctx.tenant_id,
        endpoint=endpoint,
        provider=target.provider.name,
        upstream_model=target.upstream_model,
        body=body,
    )


def _acceptable(entry: CachedEntry, policy: CachePolicy) -> bool:
    now = time.time()
    return entry.is_fresh(now) and (policy.max_age is None or entry.age(now) <= policy.max_age)


def _detached_future() -> "asyncio.Future[Landed | None]":
    """For a fill nobody waits on (a refresh, or after a failed leader)."""
    return asyncio.get_running_loop().create_future()


def _storable(body: bytes | None, events: list[bytes]) -> bytes | None:
    """Only a JSON object answer is stored (an HTML error page with a 200 is not)."""
    if body is None:
        return orjson.dumps(completion_from_events(events))
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(parsed, dict) and ("choices" in parsed or "data" in parsed) else None


@dataclass
class CacheFill:
    """A miss on its way upstream: what to store once it completes."""

    ctx: TenantContext
    target: RouteTarget
    endpoint: str
    key: str
    policy: CachePolicy
    flight: Flight
    semantic: "SemanticQuery | None" = None  # the question embedded: its vector is stored with the answer
    request: bytes | None = None  # the client's request body, kept with the answer (cache_warmup --save-popular)
    events: list[bytes] = field(default_factory=list)

    def add(self, event: bytes) -> None:
        self.events.append(event)

    def complete(self, body: bytes | None, usage: UsageEvent | None) -> None:
        """A successful answer: store it (body None: assemble the recorded stream).

        Never raises: this runs in a stream's `finally`, and whatever goes
        wrong, the requests waiting on this one must be let go."""
        try:
            body = _storable(body, self.events)
        except Exception:
            log.warning("an answer could not be prepared for the cache; not stored", exc_info=True)
            body = None
        if usage is None or body is None:
            return self.fail()
        now = time.time()
        entry = CachedEntry(
            tenant_id=self.ctx.tenant_id,
            key=self.key,
            endpoint=self.endpoint,
            model=self.target.public_model,
            body=body,
            usage=usage.usage,
            cost_nanos=usage.cost_nanos,
            created_at=now,
            expires_at=now + self.policy.ttl_seconds,
            events=tuple(self.events) if self.events else None,
            price_id=usage.price_id,
            request=self.request,
        )
        self.flight.land(entry)
        if self.semantic is not None and self.flight.write:
            from proxy.semantic import semantic_remember  # proxy.semantic imports proxy.forward, which imports this

            semantic_remember(self.semantic, entry_key=self.key, usage=usage, expires_at=entry.expires_at)

    def fail(self) -> None:
        self.flight.land(None)


@dataclass(slots=True)
class HitAnswer:
    """A hit's answer, already recorded: sent by Django (cache_hit_response)
    or straight over ASGI by the cache lane (gateway.cache_lane)."""

    headers: dict[str, str]  # Content-Type included
    body: bytes = b""  # the JSON answer
    events: list[bytes] | None = None  # or a stream's events


def cache_hit_answer(
    ctx: TenantContext,
    target: RouteTarget,
    entry: CachedEntry,
    body: dict[str, Any],
    *,
    request_id: str,
    stream: bool,
    guard: "Callable[[HitAnswer], str] | None" = None,
    similarity: float | None = None,
) -> HitAnswer:
    """Serve a hit and record it: billed at zero, with the cost it saved.
    `guard`: the key's output guardrails, which redact the answer in place
    (or raise) and give the verdicts the record carries. `similarity`: a
    semantic hit's (None: an exact one)."""
    started = time.perf_counter()
    if stream:
        options = body.get("stream_options")
        wants_usage = isinstance(options, dict) and options.get("include_usage") is True
        events = (
            recorded_events(entry.events, include_usage=wants_usage)
            if entry.events
            else events_from_completion(orjson.loads(entry.body), include_usage=wants_usage)
        )
        answer = HitAnswer({"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}, events=events)
    else:
        answer = HitAnswer({"Content-Type": entry.content_type}, body=entry.body)
    answer.headers["x-cache"] = "hit"
    cache_store().hit_count(ctx.tenant_id, entry.key)  # the entry's popularity, written in batches
    if similarity is None:
        answer.headers[MATCH_HEADER] = "exact"
    else:
        answer.headers[MATCH_HEADER] = "semantic"
        answer.headers[SIMILARITY_HEADER] = f"{similarity:.3f}"
    guardrails = guard(answer) if guard is not None else ""
    cache_hit_recorded(
        ctx,
        target,
        request_id=request_id,
        endpoint=entry.endpoint,
        stream=stream,
        started=started,
        saved_nanos=entry.cost_nanos,
        price_id=entry.price_id,
        guardrails=guardrails,
    )
    return answer


def cache_hit_response(answer: HitAnswer) -> HttpResponseBase:
    """A hit's answer as Django's response."""
    headers = dict(answer.headers)
    content_type = headers.pop("Content-Type")
    response: HttpResponseBase
    if answer.events is not None:
        response = StreamingHttpResponse(_replay(answer.events), content_type=content_type)
    else:
        response = HttpResponse(answer.body, content_type=content_type)
    for name, value in headers.items():
        response[name] = value
    return response


async def _replay(events: list[bytes]) -> AsyncIterator[bytes]:
    for event in events:
        yield event
