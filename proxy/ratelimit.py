"""Rate limits per key and per tenant: requests and tokens per minute, and
requests in flight.

A request is admitted only if every limit of its key and of its tenant has
room; admission counts it in all of them at once, so a refused request
counts nowhere. Tokens are reserved from an estimate (the body's size over
four, plus max_tokens) and settled on the real count when the request ends;
the in-flight count is given back then too. Minutes are fixed windows.

One process counts in memory (admission is a synchronous check-and-add on
the event loop); with REDIS_URL a Lua script does it atomically across
processes, in the one call a request makes to Redis: the same script
carries the process's pending writes (earlier requests' releases and
settlements) and reserves the request's worst case against its budgets
(billing.guard). A key busy in this process takes a slice of its limits in
that call and admits the requests that follow from it with no call at all
(proxy.leases). A refusal is a 429 with code `rate_limited`, `Retry-After` and
`x-ratelimit-*` headers, which successful responses carry too.
"""

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from billing.caps import Reservation, SpendCap
from billing.guard import LUA_RESERVE, Ahead, RedisSpendGuard, reserved_ahead, spend_guard
from billing.redis_calls import LUA_PRELUDE, LUA_WRITES, LuaScript, RedisWrites, script_call
from gateway.kernel.context import RateLimits, TenantContext
from gateway.kernel.errors import GatewayError, backend_unavailable
from gateway.kernel.redis import redis_client, redis_failed, redis_key
from proxy.leases import LUA_LEASE, Lease, Lookup, RequestRate, lease_ends, lease_seconds, lease_section, lease_timer

log = logging.getLogger(__name__)
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
    lease: Lease | None = None  # with Redis: admitted from this process's slice, no call


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


def _headers(counters: tuple[Counter, ...], used: list[int], now: float) -> dict[str, str]:
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


def _refusal(counter: Counter, used: int, now: float) -> GatewayError:
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
                raise _refusal(counter, used, now)
        after = []
        for counter in counters:
            self._used[counter.name] = self._used.get(counter.name, 0) + counter.amount
            after.append(self._used[counter.name])
        return Admission(counters, _headers(counters, after, now))

    def release(self, admission: Admission, tokens: int) -> None:
        if admission.released:
            return
        admission.released = True
        for counter in admission.counters:
            if counter.kind == "parallel":
                self._used[counter.name] = max(self._used.get(counter.name, 0) - 1, 0)
            elif counter.kind == "tokens" and counter.name in self._used:
                self._used[counter.name] = max(self._used[counter.name] + tokens - counter.amount, 0)


# The rate-limit section of the one script call (billing.guard's sections):
# ARGV the count of counters, the slot id and the lease (ms), then limit,
# amount, ttl and "lease" (1 for requests in flight) per counter. `admit()`
# returns 0 and the counts after admission, or the index and the count of
# the first counter without room, having counted nothing.
#
# Requests in flight are a sorted set of slots scored by when their lease
# ends (Redis's own clock): an expired slot is dropped before counting, so a
# slot whose release never arrived (a Redis blip, a process killed) frees
# itself within one lease, not after a fixed ten-minute TTL.
LUA_ADMIT = """
local function admit()
  local n = tonumber(arg())
  if n == 0 then return 0, {} end
  local slot, lease = arg(), tonumber(arg())
  local counters, used = {}, {}
  for i = 1, n do counters[i] = {key(), tonumber(arg()), tonumber(arg()), tonumber(arg()), arg() == '1'} end
  for i, c in ipairs(counters) do
    if c[5] then
      redis.call('ZREMRANGEBYSCORE', c[1], '-inf', now)
      used[i] = redis.call('ZCARD', c[1])
    else
      used[i] = tonumber(redis.call('GET', c[1]) or '0')
    end
    if used[i] + c[3] > c[2] then return i, {used[i]} end
  end
  for i, c in ipairs(counters) do
    if c[5] then
      redis.call('ZADD', c[1], now + lease, slot)
      redis.call('PEXPIRE', c[1], lease * 2)
      used[i] = used[i] + 1
    else
      used[i] = redis.call('INCRBY', c[1], c[3])
      redis.call('EXPIRE', c[1], c[4], 'NX')  -- from creation, not refreshed by traffic
    end
  end
  return 0, used
end
"""

# One call per request: the writes pending, the rate limits, (when the
# request has a budget or credit to reserve against) the reservation, and
# (when the key is busy here) a slice for the requests that follow.
# Returns {0, reservation refused (0 or the cap's index), its spent + held,
# requests' worth of slice granted, counts...} when admitted, or {index,
# count} of the first counter without room.
_ADMIT_AND_RESERVE = (
    LUA_PRELUDE
    + LUA_WRITES
    + LUA_RESERVE
    + LUA_ADMIT
    + LUA_LEASE
    + """
local refused, used = admit()
if refused ~= 0 then return {refused, used[1]} end
local cap, held = reserve()
local out = {0, cap, held, lease(cap == 0)}
for _, value in ipairs(used) do out[#out + 1] = value end
return out
"""
)
ADMIT_SCRIPT = LuaScript(_ADMIT_AND_RESERVE)

# KEYS: in-flight sets. ARGV: the lease (ms), then one slot per key: the
# slot's lease runs again from now, if it is still there.
_RENEW = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local lease = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'XX', now + lease, ARGV[i + 1])
  redis.call('PEXPIRE', key, lease * 2)  -- a no-op once the set is gone
end
return 0
"""


class RedisRateLimiter:
    def __init__(self, guard: RedisSpendGuard | None = None) -> None:
        # With the process's spend guard, admissions reserve in the same call
        # and share its pending writes.
        self.guard = guard
        self.writes = guard.writes if guard is not None else RedisWrites(settings.REDIS_URL)
        self._held: dict[str, tuple[str, ...]] = {}  # slot -> its in-flight sets, while the request lives
        self._renewer: asyncio.Task[None] | None = None
        self._leases: dict[Lookup, Lease] = {}  # the slice each lookup admits from now
        self._asking: dict[Lookup, asyncio.Future[None]] = {}  # one slice asked at a time per lookup
        self._rate = RequestRate()

    async def admit(
        self, counters: tuple[Counter, ...], now: float, spend: Spend | None = None, *, lease: bool = False
    ) -> Admission:
        """Admit under `counters`; with `spend` (caps, amount), reserve it in
        the same call for the request's first attempt (billing.guard.Ahead).
        A reservation without room does not refuse here: the request may be
        a cache hit, which costs nothing. `lease`: from this process's slice
        when it has room (no call), and ask for one when the key is busy."""
        if self.guard is None:
            spend = None
        lookup: Lookup | None = None
        wanted = 0
        if lease and lease_seconds() > 0:
            lookup = (tuple(c.name for c in counters), () if spend is None else tuple(c.key for c in spend[0]))
            wanted = self._rate.wanted(lookup, time.monotonic())
            # A slice on its way is the same wait as a call of its own, likely
            # none after; a second one when the first was taken by others.
            for _ in range(2):
                current = self._leases.get(lookup)
                if current is not None and current.fits(counters, None if spend is None else spend[1], now):
                    return self._from_lease(current, counters, spend, now)
                asked = self._asking.get(lookup)
                if asked is None:
                    break
                await asyncio.shield(asked)
            current = self._leases.get(lookup)
            if current is not None:
                if current.fits(counters, None if spend is None else spend[1], now):
                    return self._from_lease(current, counters, spend, now)
                if now >= current.ends_at:
                    current.end()
        slot = uuid.uuid4().hex
        keys, args = self.writes.take()
        # No counters (a key with only a budget): the section is its count
        # alone, which LUA_ADMIT reads before returning.
        args += [len(counters), slot, self._lease_ms()] if counters else [0]
        names = [_redis_name(c) for c in counters]
        for counter, name in zip(counters, names, strict=True):
            keys.append(name)
            args += [counter.limit, counter.amount, counter.ttl, 1 if counter.kind == "parallel" else 0]
        reservation_id = ""
        cap_keys: list[str] = []
        if spend is not None and self.guard is not None:
            reservation_id, cap_keys, cap_args = self.guard.reserve_section(*spend)
            keys += cap_keys
            args += cap_args
        else:
            args.append(0)
        lease_id = ""
        if lookup is not None and wanted >= 2 and lookup not in self._asking:
            spend_ms = self.guard.lease_ms() if self.guard is not None else 0
            lease_id, lease_keys, lease_args = lease_section(
                counters, names, spend, cap_keys, wanted, self._lease_ms(), spend_ms
            )
            keys += lease_keys
            args += lease_args
            self._asking[lookup] = asyncio.get_running_loop().create_future()
        else:
            args.append(0)
        try:
            result = await script_call(self.writes.url, ADMIT_SCRIPT, keys, args)
        except Exception as exc:
            if not redis_failed(exc):
                raise
            self.writes.lost(exc, int(args[0]))
            if not counters:  # nothing to limit: the attempt's own reservation meets the outage
                return Admission((), {}, released=True)  # under BILLING_ON_BACKEND_FAILURE
            if settings.PROXY_RATELIMIT_ON_BACKEND_FAILURE != "open":
                raise backend_unavailable("rate limiter") from None
            log.warning("rate limits not applied: Redis is unavailable (%s)", exc)
            return Admission(counters, {}, released=True)  # nothing was counted, so nothing is given back
        finally:
            if lease_id and lookup is not None:
                asked = self._asking.pop(lookup)
                asked.set_result(None)  # the slice (if granted) is in place before its waiters run
        current = None if lookup is None else self._leases.get(lookup)
        if result[0]:
            # Requests sent with the one that took this process's slice may
            # come back refused: the slice is theirs to use.
            if current is not None and current.fits(counters, None if spend is None else spend[1], now):
                return self._from_lease(current, counters, spend, now)
            raise _refusal(counters[int(result[0]) - 1], int(result[1]), now)
        counts = [int(v) for v in result[4:]]
        if lease_id and lookup is not None and int(result[3]) >= 2:
            current = self._lease_start(lease_id, lookup, int(result[3]), counters, names, spend, cap_keys, counts, now)
        held = tuple(name for c, name in zip(counters, names, strict=True) if c.kind == "parallel")
        if held:
            self._held[slot] = held
            self._renew_start()
        admission = Admission(counters, _headers(counters, counts, now), slot=slot)
        if reservation_id and spend is not None and self.guard is not None:
            if not result[1]:
                made: Reservation | None = self.guard.adopt(*spend, reservation_id)
            elif current is not None and current.active and now < current.ends_at and spend[1] <= current.cap_left:
                made = current.reserve(spend[1])  # no room left in Redis, but in this process's slice
            else:
                made = None
            admission.ahead = Ahead(tuple(c.key for c in spend[0]), spend[1], made)
            reserved_ahead.set(admission.ahead)
        return admission

    def _from_lease(self, lease: Lease, counters: tuple[Counter, ...], spend: Spend | None, now: float) -> Admission:
        """Admitted (and reserved) from the process's slice: no call."""
        slot = lease.take(counters)
        admission = Admission(counters, _headers(counters, lease.headers_used(), now), slot=slot, lease=lease)
        if spend is not None:
            admission.ahead = Ahead(tuple(c.key for c in spend[0]), spend[1], lease.reserve(spend[1]))
            reserved_ahead.set(admission.ahead)
        return admission

    def _lease_start(
        self,
        lease_id: str,
        lookup: Lookup,
        grant: int,
        counters: tuple[Counter, ...],
        names: list[str],
        spend: Spend | None,
        cap_keys: list[str],
        counts: list[int],
        now: float,
    ) -> Lease:
        """The slice Redis granted (`grant` requests' worth) becomes the one
        this lookup admits from; the one before ends."""
        parallel = tuple(name for c, name in zip(counters, names, strict=True) if c.kind == "parallel")
        lease = Lease(
            id=lease_id,
            lookup=lookup,
            ends_at=lease_ends(now),
            counters=counters,
            names=tuple(names),
            granted=[grant * c.amount for c in counters],
            used=[0] * len(counters),
            counts=counts,
            caps=() if spend is None else spend[0],
            cap_keys=tuple(cap_keys),
            cap_left=0 if spend is None else grant * spend[1],
            writes=self.writes,
            slots=self,
            guard=self.guard if spend is not None else None,
            free_slots=[f"{lease_id}:{j}" for j in range(1, grant + 1)] if parallel else [],
        )
        for member in lease.free_slots:
            self._held[member] = parallel
        if lease.free_slots:
            self._renew_start()
        if lease.guard is not None:
            lease.guard.hold(lease_id, lease.cap_keys)
        previous = self._leases.get(lookup)
        self._leases[lookup] = lease
        if previous is not None:
            previous.end()
        lease_timer(lease)
        return lease

    def lease_ended(self, lease: Lease) -> None:
        if self._leases.get(lease.lookup) is lease:
            del self._leases[lease.lookup]

    def unhold(self, slot: str) -> None:
        self._held.pop(slot, None)

    def release(self, admission: Admission, tokens: int) -> None:
        """The in-flight slot and the token count's correction join the
        pending writes (sent with the next call, or within
        BILLING_SETTLE_FLUSH_SECONDS); so does a reservation made ahead that
        no attempt took."""
        if admission.released:
            return
        admission.released = True
        if admission.lease is not None:  # admitted from the slice: it takes the slot and tokens back
            admission.lease.release(admission.counters, admission.slot, tokens)
            ahead = admission.ahead
            if ahead is not None and not ahead.taken and ahead.reservation is not None and self.guard is not None:
                ahead.taken = True
                self.guard.settle_soon(ahead.reservation, 0)
            self.writes.soon()
            return
        self._held.pop(admission.slot, None)  # no longer renewed: if the release is lost, the lease ends it
        for counter in admission.counters:
            if counter.kind == "parallel":
                self.writes.release(_redis_name(counter), admission.slot)
            elif counter.kind == "tokens" and tokens != counter.amount:
                self.writes.adjust(_redis_name(counter), tokens - counter.amount)
        ahead = admission.ahead
        if ahead is not None and not ahead.taken and ahead.reservation is not None and self.guard is not None:
            ahead.taken = True
            self.guard.settle_soon(ahead.reservation, 0)
        self.writes.soon()

    async def wait_released(self) -> None:
        for lease in list(self._leases.values()):  # shutdown: every slice's unused part given back
            lease.end()
        if self._renewer is not None:
            self._renewer.cancel()
        await self.writes.wait()

    def _lease_ms(self) -> int:
        return max(int(settings.PROXY_INFLIGHT_LEASE_SECONDS * 1000), 100)

    def _renew_start(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_forever())

    async def _renew_forever(self) -> None:
        """Every third of a lease, renew the slots of the requests still open
        (one script call for all of them)."""
        while self._held:
            await asyncio.sleep(self._lease_ms() / 3000)
            pairs = [(key, slot) for slot, keys in list(self._held.items()) for key in keys]
            if not pairs:
                continue
            try:
                await redis_client().eval(
                    _RENEW, len(pairs), *[k for k, _ in pairs], self._lease_ms(), *[s for _, s in pairs]
                )
            except Exception as exc:
                if not redis_failed(exc):
                    raise
                log.warning("in-flight leases not renewed (Redis unavailable): %s", exc)


def _redis_name(counter: Counter) -> str:
    # A new name for the in-flight sets: the counters of earlier versions were strings.
    return redis_key(
        "rate", counter.name.replace(":parallel", ":inflight") if counter.kind == "parallel" else counter.name
    )


_limiter: LocalRateLimiter | RedisRateLimiter | None = None


def rate_limiter() -> LocalRateLimiter | RedisRateLimiter:
    global _limiter
    if _limiter is None:
        if settings.REDIS_URL:
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
    if isinstance(limiter, RedisRateLimiter):
        ahead = None if spend is None or limiter.guard is None else spend()
        if not limited and ahead is None:
            return None
        now = time.time()
        counters = counters_for(ctx, tokens=tokens, now=now) if limited else ()
        return await limiter.admit(counters, now, ahead, lease=True)
    if not limited:
        return None
    now = time.time()
    return await limiter.admit(counters_for(ctx, tokens=tokens, now=now), now)


def rate_limit_release(admission: Admission | None, tokens: int = 0) -> None:
    if admission is not None:
        rate_limiter().release(admission, tokens)


def tokens_estimate(body: dict[str, Any], size: int) -> int:
    """What a request reserves against tokens per minute: about four bytes a
    token for the prompt, plus the most output it allows."""
    output = body.get("max_completion_tokens") or body.get("max_tokens") or body.get("max_output_tokens") or 0
    return size // 4 + (output if isinstance(output, int) else 0)
