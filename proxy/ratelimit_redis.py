"""Rate limits shared through Redis: the admission script and the limiter
that calls it (proxy.ratelimit chooses it when REDIS_URL is set).

A request's admission is one script call: the process's pending writes, its
counters, the reservation of its worst case against its budgets
(billing.guard) and, when the key is busy here, a slice for the requests
that follow (proxy.leases), all in one atomic run.
"""

import asyncio
import logging
import time
import uuid

from django.conf import settings

from billing.caps import Reservation
from billing.guard import LUA_RESERVE, Ahead, RedisSpendGuard, reserved_ahead
from billing.redis_calls import LUA_PRELUDE, LUA_WRITES, LuaScript, RedisWrites, leases_renewed, script_call
from gateway.kernel.errors import backend_unavailable
from gateway.kernel.redis import redis_client, redis_failed, redis_key
from proxy.leases import LUA_LEASE, Lease, Lookup, RequestRate, lease_ends, lease_seconds, lease_section, lease_timer
from proxy.ratelimit import Admission, Counter, Spend, headers_for, refusal

log = logging.getLogger(__name__)


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
            raise refusal(counters[int(result[0]) - 1], int(result[1]), now)
        counts = [int(v) for v in result[4:]]
        if lease_id and lookup is not None and int(result[3]) >= 2:
            current = self._lease_start(lease_id, lookup, int(result[3]), counters, names, spend, cap_keys, counts, now)
        held = tuple(name for c, name in zip(counters, names, strict=True) if c.kind == "parallel")
        if held:
            self._held[slot] = held
            self._renew_start()
        admission = Admission(counters, headers_for(counters, counts, now), slot=slot)
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
        admission = Admission(counters, headers_for(counters, lease.headers_used(), now), slot=slot, lease=lease)
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
        """The in-flight slots of the requests still open, renewed while they live."""
        await leases_renewed(self._held, self._lease_ms, _RENEW, redis_client, "in-flight leases")


def _redis_name(counter: Counter) -> str:
    # A new name for the in-flight sets: the counters of earlier versions were strings.
    return redis_key(
        "rate", counter.name.replace(":parallel", ":inflight") if counter.kind == "parallel" else counter.name
    )
