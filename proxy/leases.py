"""Leases: a busy key's process spends a slice of its limits locally.

With Redis, a request of a key with rate limits costs one script call
(proxy.ratelimit). When the key is busy in this process, that call also
asks for a slice: `n` requests' worth of every counter the request counts
in (requests and tokens per minute, in-flight slots, and its worst case
against each budget and the prepaid credit). The requests that follow are
admitted and reserved from the slice in memory, with no call, until it runs
out, its BILLING_LEASE_SECONDS end, or its minute ends. Then the unused part
is given back with the process's next call (billing.redis_calls.RedisWrites).

Why nothing can overshoot: Redis grants a slice only out of what is left,
in the same atomic script that counts everything else, so what is counted
in Redis (spent + held, requests, slots) is never above a limit, and a
process never admits more than its slices hold. What a slice costs is
admitting a request elsewhere a moment late, never early; so slices are
small: at most an eighth of what is left divided among the processes
holding one (each counter keeps its holders in `<counter>:holders`), and
none when that is under two requests' worth. Near the end of a budget or a
window every request is reserved exactly, one by one, as without leases.

A slice of a budget is a reservation like a request's (its id in the
counter's `:held`, renewed by the guard while the process lives), so one
whose process was killed stops counting within
BILLING_RESERVATION_LEASE_SECONDS; its in-flight slots likewise within
PROXY_INFLIGHT_LEASE_SECONDS. A per-minute slice cannot expire inside its
minute: a killed process's unused requests count until the minute ends.
"""

import asyncio
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.conf import settings

from billing.caps import Reservation, SpendCap
from billing.guard import RedisSpendGuard
from billing.redis_calls import RedisWrites

if TYPE_CHECKING:
    from proxy.ratelimit import Counter

MAX_REQUESTS = 64  # a slice is a few tens of milliseconds of a busy key's traffic, never more
SHARE_DIVISOR = 8  # of what is left per holder
Lookup = tuple[tuple[str, ...], tuple[str, ...]]  # the counters' names and the caps' keys a request counts in

# The lease section of the one script call, after the admission and the
# reservation (it runs only when both succeeded). ARGV: the count of items
# (0: no slice asked), the lease id, the requests wanted, how long the
# process counts as a holder, the slots' lease and the budget's (ms); then
# per item its kind ('w' a per-minute counter, 'p' an in-flight set, 'b' a
# spend counter), limit and one request's amount, KEYS its counter.
# Returns the requests' worth granted (0: none).
LUA_LEASE = (
    f"local SHARE_DIVISOR = {SHARE_DIVISOR}"
    + """
local function lease(ok)
  local n = tonumber(arg())
  if n == 0 then return 0 end
  local id, grant = arg(), tonumber(arg())
  local holder_ms, slot_ms, spend_ms = tonumber(arg()), tonumber(arg()), tonumber(arg())
  local items = {}
  for i = 1, n do items[i] = {key(), arg(), tonumber(arg()), tonumber(arg())} end
  if not ok then return 0 end
  for _, it in ipairs(items) do
    local k, kind, limit, unit = it[1], it[2], it[3], it[4]
    local holders = k .. ':holders'
    redis.call('ZREMRANGEBYSCORE', holders, '-inf', now)
    if unit > 0 then
      local used
      if kind == 'p' then
        used = redis.call('ZCARD', k)
      elseif kind == 'b' then
        used = tonumber(redis.call('GET', k) or '0') + tonumber(redis.call('GET', k .. ':heldsum') or '0')
      else
        used = tonumber(redis.call('GET', k) or '0')
      end
      local share = math.floor((limit - used) / (redis.call('ZCARD', holders) + 1) / SHARE_DIVISOR / unit)
      if share < grant then grant = share end
    end
  end
  if grant < 2 then return 0 end
  for _, it in ipairs(items) do
    local k, kind, unit = it[1], it[2], it[4]
    redis.call('ZADD', k .. ':holders', now + holder_ms, id)
    redis.call('PEXPIRE', k .. ':holders', holder_ms * 2)
    local amount = grant * unit
    if amount > 0 then
      if kind == 'p' then
        for j = 1, amount do redis.call('ZADD', k, now + slot_ms, id .. ':' .. j) end
        redis.call('PEXPIRE', k, slot_ms * 2)
      elseif kind == 'b' then
        redis.call('ZADD', k .. ':held', now + spend_ms, id)
        redis.call('HSET', k .. ':amounts', id, amount)
        redis.call('INCRBY', k .. ':heldsum', amount)
      else
        redis.call('INCRBY', k, amount)
      end
    end
  end
  return grant
end
"""
)


def lease_seconds() -> float:
    return float(settings.BILLING_LEASE_SECONDS)


class RequestRate:
    """Requests per second of each lookup in this process, over about the
    last second: what sizes the slice asked for."""

    _MAX_LOOKUPS = 10_000

    def __init__(self) -> None:
        self._seen: dict[Lookup, tuple[float, int, float]] = {}  # lookup -> (since, count, last second's rate)

    def count(self, lookup: Lookup, now: float) -> float:
        since, count, previous = self._seen.get(lookup, (now, 0, 0.0))
        count += 1
        if now - since >= 1.0:
            previous, since, count = count / (now - since), now, 0
        if len(self._seen) > self._MAX_LOOKUPS:
            self._seen.clear()
        self._seen[lookup] = (since, count, previous)
        return max(previous, count / max(now - since, 0.25))

    def wanted(self, lookup: Lookup, now: float) -> int:
        """Requests' worth to ask for: the rate over a quarter of a lease."""
        return min(MAX_REQUESTS, math.floor(self.count(lookup, now) * lease_seconds() / 4))


@dataclass(eq=False)
class Lease:
    """One slice in this process: what Redis granted, what is used of it."""

    id: str
    lookup: Lookup
    ends_at: float  # time.time(): the lease's seconds, or its minute's end
    counters: "tuple[Counter, ...]"
    names: tuple[str, ...]  # the counters' Redis names
    granted: list[int]  # per counter (in-flight: slots)
    used: list[int]  # per counter: requests, tokens; in-flight: unused here
    counts: list[int]  # per counter: Redis's count before the slice, for the headers
    caps: tuple[SpendCap, ...]
    cap_keys: tuple[str, ...]
    cap_left: int  # nanos of each cap's slice not reserved or spent yet
    writes: RedisWrites
    slots: "Any"  # proxy.ratelimit_redis.RedisRateLimiter: renews the slots
    guard: RedisSpendGuard | None
    free_slots: list[str] = field(default_factory=list)
    open: int = 0  # requests admitted or reserved from it, not ended yet
    active: bool = True

    def fits(self, counters: "tuple[Counter, ...]", amount: int | None, now: float) -> bool:
        if not self.active or now >= self.ends_at:
            return False
        for i, counter in enumerate(counters):
            if counter.kind == "parallel":
                if not self.free_slots:
                    return False
            elif self.used[i] + counter.amount > self.granted[i]:
                return False
        return amount is None or amount <= self.cap_left

    def take(self, counters: "tuple[Counter, ...]") -> str:
        """Count a request in the slice's counters; returns its slot ("": none)."""
        slot = self.free_slots.pop() if any(c.kind == "parallel" for c in counters) else ""
        for i, counter in enumerate(counters):
            if counter.kind != "parallel":
                self.used[i] += counter.amount
        self.open += 1
        return slot

    def reserve(self, amount: int) -> Reservation:
        self.cap_left -= amount
        self.open += 1
        return Reservation(caps=self.caps, amount=amount, id=self.id, lease=self)

    def headers_used(self) -> list[int]:
        return [count + used for count, used in zip(self.counts, self.used, strict=True)]

    def release(self, counters: "tuple[Counter, ...]", slot: str, tokens: int) -> None:
        """A request admitted from the slice ended (`tokens` its real count)."""
        for i, counter in enumerate(counters):
            if counter.kind == "tokens" and tokens != counter.amount:
                if self.active:
                    self.used[i] += tokens - counter.amount
                else:
                    self.writes.adjust(self.names[i], tokens - counter.amount)
        if slot:
            if self.active:
                self.free_slots.append(slot)
            else:
                self._slot_back(slot)
        self.open -= 1
        self._done_maybe()

    def settle(self, reservation: Reservation, actual: int) -> None:
        """A reservation from the slice settled (billing.guard.settle_soon)."""
        if self.active:  # what it does not cost is the slice's again
            self.cap_left += reservation.amount - actual
            cut = actual
        else:  # the slice kept only what was in flight: this one's part goes
            cut = reservation.amount
        for key in self.cap_keys:
            self.writes.consume(key, self.id, cut, actual)
        self.open -= 1
        self._done_maybe()
        self.writes.soon()

    def end(self) -> None:
        """No more admissions from it: the unused part given back. What its
        open requests hold stays held until each ends."""
        if not self.active:
            return
        self.active = False
        for i, counter in enumerate(self.counters):
            if counter.kind != "parallel" and self.used[i] != self.granted[i]:
                self.writes.adjust(self.names[i], self.used[i] - self.granted[i])
        for slot in self.free_slots:
            self._slot_back(slot)
        self.free_slots = []
        if self.cap_left > 0:
            for key in self.cap_keys:
                self.writes.consume(key, self.id, self.cap_left, 0)
        self.cap_left = 0
        for key in (*self.names, *self.cap_keys):  # no longer a holder: the others' slices may grow
            self.writes.release(key + ":holders", self.id)
        self.slots.lease_ended(self)
        self._done_maybe()
        self.writes.soon()

    def _slot_back(self, slot: str) -> None:
        for i, counter in enumerate(self.counters):
            if counter.kind == "parallel":
                self.writes.release(self.names[i], slot)
        self.slots.unhold(slot)

    def _done_maybe(self) -> None:
        if not self.active and self.open <= 0 and self.guard is not None:
            self.guard.unhold(self.id)


def lease_section(
    counters: "tuple[Counter, ...]",
    names: list[str],
    spend: tuple[tuple[SpendCap, ...], int] | None,
    cap_keys: list[str],
    wanted: int,
    slot_lease_ms: int,
    spend_lease_ms: int,
) -> tuple[str, list[str], list[int | str]]:
    """The script's lease section asking `wanted` requests' worth: id, keys, args."""
    lease_id = "lease-" + uuid.uuid4().hex
    keys = list(names)
    items: list[int | str] = []
    for counter in counters:
        items += ["p" if counter.kind == "parallel" else "w", counter.limit, counter.amount]
    if spend is not None:
        caps, amount = spend
        for cap, key in zip(caps, cap_keys, strict=True):
            keys.append(key)
            items += ["b", cap.limit_nanos, amount]
    holder_ms = max(int(lease_seconds() * 1000), 1)
    args: list[int | str] = [len(keys), lease_id, wanted, holder_ms, slot_lease_ms, spend_lease_ms, *items]
    return lease_id, keys, args


def lease_ends(now: float) -> float:
    """A lease's end: its seconds, and never past its minute (the counters' window)."""
    from proxy.ratelimit import WINDOW_SECONDS

    return min(now + lease_seconds(), (now // WINDOW_SECONDS + 1) * WINDOW_SECONDS)


def lease_timer(lease: Lease) -> None:
    """End the lease at its time even when no request comes to notice."""
    delay = max(lease.ends_at - time.time(), 0.0)
    asyncio.get_running_loop().call_later(delay, lease.end)
