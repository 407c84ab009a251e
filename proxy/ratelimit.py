"""Rate limits per key and per tenant: requests and tokens per minute, and
requests in flight.

A request is admitted only if every limit of its key and of its tenant has
room; admission counts it in all of them at once, so a refused request
counts nowhere. Tokens are reserved from an estimate (the body's size over
four, plus max_tokens) and settled on the real count when the request ends;
the in-flight count is given back then too. Minutes are fixed windows.

One process counts in memory (admission is a synchronous check-and-add on
the event loop); with REDIS_URL a Lua script does it atomically across
processes (proxy.ratelimit_redis), in the one call a request makes to Redis: the same script
carries the process's pending writes (earlier requests' releases and
settlements) and reserves the request's worst case against its budgets
(billing.guard). A key busy in this process takes a slice of its limits in
that call and admits the requests that follow from it with no call at all
(proxy.leases). A refusal is a 429 with code `rate_limited`, `Retry-After` and
`x-ratelimit-*` headers, which successful responses carry too.
"""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.conf import settings

from billing.caps import SpendCap, has_caps
from billing.guard import Ahead, RedisSpendGuard, spend_guard
from gateway.kernel.context import RateLimits, TenantContext
from gateway.kernel.errors import GatewayError

if TYPE_CHECKING:
    from proxy.leases import Lease
    from proxy.ratelimit_redis import RedisRateLimiter

WINDOW_SECONDS = 60
_PARALLEL_TTL_SECONDS = 600  # in-process counts only; Redis holds in-flight slots as leases
Spend = tuple[tuple[SpendCap, ...], int]  # the caps a request reserves against, and its worst case


@dataclass(frozen=True, slots=True)
class Counter:
    name: str  # "key:12:rpm:<window>"
    limit: int
    amount: int
    kind: str  # requests, tokens or parallel
    ttl: int


@dataclass
class Admission:
    """A request let in: what it holds until it ends."""

    counters: tuple[Counter, ...]
    headers: dict[str, str] = field(default_factory=dict)
    released: bool = False
    slot: str = ""  # with Redis: this request's lease in each in-flight set
    ahead: Ahead | None = None  # with Redis: the reservation made in the same call
    lease: "Lease | None" = None  # with Redis: admitted from this process's slice, no call


def counters_for(ctx: TenantContext, *, tokens: int, now: float) -> tuple[Counter, ...]:
    window = int(now // WINDOW_SECONDS)
    counters: list[Counter] = []
    for scope, owner, limits in (("key", ctx.key_id, ctx.key_limits), ("tenant", ctx.tenant_id, ctx.tenant_limits)):
        counters += _scope_counters(f"{scope}:{owner}", limits, window, tokens)
    return tuple(counters)


def _scope_counters(scope: str, limits: RateLimits, window: int, tokens: int) -> list[Counter]:
    ttl = 2 * WINDOW_SECONDS
    counters = []
    if limits.rpm is not None:
        counters.append(Counter(f"{scope}:rpm:{window}", limits.rpm, 1, "requests", ttl))
    if limits.tpm is not None:
        counters.append(Counter(f"{scope}:tpm:{window}", limits.tpm, tokens, "tokens", ttl))
    if limits.parallel is not None:
        counters.append(Counter(f"{scope}:parallel", limits.parallel, 1, "parallel", _PARALLEL_TTL_SECONDS))
    return counters


def _reset_seconds(now: float) -> int:
    return max(1, math.ceil(WINDOW_SECONDS - now % WINDOW_SECONDS))


def headers_for(counters: tuple[Counter, ...], used: list[int], now: float) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers, for the tightest counter of each kind."""
    headers: dict[str, str] = {}
    tightest: dict[str, tuple[int, Counter]] = {}
    for counter, value in zip(counters, used, strict=True):
        left = counter.limit - value
        if counter.kind != "parallel" and (counter.kind not in tightest or left < tightest[counter.kind][0]):
            tightest[counter.kind] = (left, counter)
    for kind, (left, counter) in tightest.items():
        headers[f"x-ratelimit-limit-{kind}"] = str(counter.limit)
        headers[f"x-ratelimit-remaining-{kind}"] = str(max(left, 0))
        headers[f"x-ratelimit-reset-{kind}"] = f"{_reset_seconds(now)}s"
    return headers


def refusal(counter: Counter, used: int, now: float) -> GatewayError:
    owner = "key" if counter.name.startswith("key:") else "tenant"
    retry_after = 1 if counter.kind == "parallel" else _reset_seconds(now)
    if counter.kind == "parallel":
        message = f"This API {owner} already has {used} requests in flight, its limit."
    else:
        per_minute = "requests" if counter.kind == "requests" else "tokens"
        message = (
            f"Rate limit of {counter.limit} {per_minute} per minute reached for this {owner}"
            f" ({used} used; this request needs {counter.amount}). Try again in {retry_after}s."
        )
    headers = {"Retry-After": str(retry_after)}
    if counter.kind != "parallel":
        headers[f"x-ratelimit-limit-{counter.kind}"] = str(counter.limit)
        headers[f"x-ratelimit-remaining-{counter.kind}"] = str(max(counter.limit - used, 0))
        headers[f"x-ratelimit-reset-{counter.kind}"] = f"{retry_after}s"
    return GatewayError(429, "rate_limited", message, retryable=True, headers=headers)


class LocalRateLimiter:
    def __init__(self) -> None:
        self._used: dict[str, int] = {}
        self._window = 0

    async def admit(self, counters: tuple[Counter, ...], now: float) -> Admission:
        window = int(now // WINDOW_SECONDS)
        if window != self._window:  # forget past minutes (in-flight counts stay)
            self._window = window
            self._used = {k: v for k, v in self._used.items() if k.endswith(":parallel")}
        for counter in counters:
            used = self._used.get(counter.name, 0)
            if used + counter.amount > counter.limit:
                raise refusal(counter, used, now)
        after = []
        for counter in counters:
            self._used[counter.name] = self._used.get(counter.name, 0) + counter.amount
            after.append(self._used[counter.name])
        return Admission(counters, headers_for(counters, after, now))

    def release(self, admission: Admission, tokens: int) -> None:
        if admission.released:
            return
        admission.released = True
        for counter in admission.counters:
            if counter.kind == "parallel":
                self._used[counter.name] = max(self._used.get(counter.name, 0) - 1, 0)
            elif counter.kind == "tokens" and counter.name in self._used:
                self._used[counter.name] = max(self._used[counter.name] + tokens - counter.amount, 0)


_limiter: "LocalRateLimiter | RedisRateLimiter | None" = None


def rate_limiter() -> "LocalRateLimiter | RedisRateLimiter":
    global _limiter
    if _limiter is None:
        if settings.REDIS_URL:
            from proxy.ratelimit_redis import RedisRateLimiter  # a process without Redis never loads it

            guard = spend_guard()
            _limiter = RedisRateLimiter(guard if isinstance(guard, RedisSpendGuard) else None)
        else:
            _limiter = LocalRateLimiter()
    return _limiter


async def rate_limit_admit(
    ctx: TenantContext, *, tokens: int, spend: Callable[[], Spend | None] | None = None
) -> Admission | None:
    """Admit a request against its key's and tenant's limits (None: nothing
    to admit). `spend()`: its worst case against its caps, reserved in the
    same Redis call for the first attempt to take; asked only with Redis (in
    one process the attempt reserves it itself). With Redis, a key with a
    budget but no rate limits is admitted here too, under no counters: its
    reservation then comes from the process's slice like a limited key's,
    not from a call of every attempt's own."""
    limiter = rate_limiter()
    limited = bool(ctx.key_limits or ctx.tenant_limits)
    if isinstance(limiter, LocalRateLimiter):
        if not limited:
            return None
        now = time.time()
        return await limiter.admit(counters_for(ctx, tokens=tokens, now=now), now)
    if not limited and not has_caps(ctx):
        return None  # nothing to count or reserve: the worst case is not worked out for nothing
    ahead = None if spend is None or limiter.guard is None else spend()
    if not limited and ahead is None:
        return None
    now = time.time()
    counters = counters_for(ctx, tokens=tokens, now=now) if limited else ()
    return await limiter.admit(counters, now, ahead, lease=True)


def rate_limit_release(admission: Admission | None, tokens: int = 0) -> None:
    if admission is not None:
        rate_limiter().release(admission, tokens)


def tokens_estimate(body: dict[str, Any], size: int) -> int:
    """What a request reserves against tokens per minute: about four bytes a
    token for the prompt, plus the most output it allows."""
    output = body.get("max_completion_tokens") or body.get("max_tokens") or body.get("max_output_tokens") or 0
    return size // 4 + (output if isinstance(output, int) else 0)
