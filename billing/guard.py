"""Reserve, then settle: budgets and prepaid credit on the request path.

Before a request is forwarded, its worst-case cost is reserved against
every cap that covers it (each budget of its tenant and key for the current
period, and the tenant's prepaid credit); if any cap would be exceeded the
request is refused. When the request ends, the reservation is replaced by
the real cost. A cap's counter therefore always holds what was spent plus
what is in flight, so a burst of concurrent requests cannot overshoot it.

One process keeps the counters in memory: reserve is a synchronous check
and increment, which nothing else on the event loop can interleave. With
REDIS_URL set, a Lua script does the same atomically across processes, and
keeps what is spent apart from what is reserved: each reservation is a
lease that its process renews while the request lives, so one whose
process died, or whose settlement Redis never received, stops counting
within BILLING_RESERVATION_LEASE_SECONDS instead of for the rest of the
period. A request costs Redis one round trip: its reservation is made in
the same script call as its rate-limit admission (proxy.ratelimit, `Ahead`),
and settlements wait in the process's pending writes (`billing.redis_calls`) for
the next call, or at most BILLING_SETTLE_FLUSH_SECONDS. A busy key's
process takes a slice of its budgets in that call and reserves from it
with no call at all (proxy.leases; `Reservation.lease`, the 'c' write).
`spend_counters_resync` (at start-up and every minute) raises a
spent counter that fell behind the books (a settlement lost in a blip) to
the books' figure; it never lowers one, since the books trail Redis by the
usage not flushed yet. No ORM here: the database's view (spend at snapshot time) arrives in the
caps, and the usage meter writes spend to the database in batches.
"""

import asyncio
import contextvars
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from billing.caps import Reservation, SpendCap, refusal
from billing.redis_calls import LUA_PRELUDE, LUA_WRITES, LuaScript, RedisWrites, leases_renewed, script_call
from gateway.kernel.errors import backend_unavailable
from gateway.kernel.redis import redis_client_for, redis_failed, redis_key

log = logging.getLogger(__name__)


class LocalSpendGuard:
    """Counters in this process's memory (the embedded, single-process run)."""

    _MAX_COUNTERS = 100_000

    def __init__(self) -> None:
        self._used: dict[str, int] = {}
        self._reserved: dict[str, int] = {}

    async def reserve(self, caps: tuple[SpendCap, ...], amount: int) -> Reservation:
        return self.reserve_now(caps, amount)

    def reserve_now(self, caps: tuple[SpendCap, ...], amount: int) -> Reservation:
        if len(self._used) > self._MAX_COUNTERS:
            self._forget_idle()
        for cap in caps:
            used = self._used.setdefault(cap.key, cap.used_nanos)
            if used + self._reserved.get(cap.key, 0) + amount > cap.limit_nanos:
                raise refusal(cap, amount, used + self._reserved.get(cap.key, 0))
        for cap in caps:
            self._reserved[cap.key] = self._reserved.get(cap.key, 0) + amount
        return Reservation(caps=caps, amount=amount)

    def settle_soon(self, reservation: Reservation, actual: int) -> None:
        if reservation.settled:
            return
        reservation.settled = True
        for cap in reservation.caps:
            self._reserved[cap.key] -= reservation.amount
            self._used[cap.key] = self._used.get(cap.key, cap.used_nanos) + actual

    def in_flight(self, key: str) -> int:
        return self._reserved.get(key, 0)

    def _forget_idle(self) -> None:
        for key in [k for k, v in self._reserved.items() if v == 0]:
            self._reserved.pop(key, None)
            self._used.pop(key, None)


# Per cap, in Redis: KEY the spent nanos (from the books when first seen),
# KEY:held the reservations (a sorted set of ids scored by when their lease
# ends, Redis's clock), KEY:amounts their amounts, KEY:heldsum their total.
# ARGV: the count of caps, reservation id, lease (ms), amount, then limit,
# initial spent, ttl (s) per cap. `reserve()` returns 0, 0 when reserved (or
# when there is no cap), else the index and spent + held of the first cap
# without room, having reserved nothing.
LUA_RESERVE = """
local function expire_leases(k)
  local gone = redis.call('ZRANGEBYSCORE', k .. ':held', '-inf', now)
  for _, id in ipairs(gone) do
    local amount = redis.call('HGET', k .. ':amounts', id)
    if amount then redis.call('DECRBY', k .. ':heldsum', amount) end
    redis.call('HDEL', k .. ':amounts', id)
  end
  if #gone > 0 then redis.call('ZREMRANGEBYSCORE', k .. ':held', '-inf', now) end
end
local function reserve()
  local n = tonumber(arg())
  if n == 0 then return 0, 0 end
  local id, lease, amount = arg(), tonumber(arg()), tonumber(arg())
  local caps = {}
  for i = 1, n do caps[i] = {key(), tonumber(arg()), arg(), tonumber(arg())} end
  for i, cap in ipairs(caps) do
    local k, limit, initial, ttl = cap[1], cap[2], cap[3], cap[4]
    expire_leases(k)
    local spent = redis.call('GET', k)
    if not spent then
      spent = initial
      if ttl > 0 then redis.call('SET', k, initial, 'EX', ttl) else redis.call('SET', k, initial) end
    end
    local used = tonumber(spent) + tonumber(redis.call('GET', k .. ':heldsum') or '0')
    if used + amount > limit then return i, used end
  end
  for _, cap in ipairs(caps) do
    local k, ttl = cap[1], cap[4]
    redis.call('ZADD', k .. ':held', now + lease, id)
    redis.call('HSET', k .. ':amounts', id, amount)
    redis.call('INCRBY', k .. ':heldsum', amount)
    if ttl > 0 then  -- from when the part is created: the period's end does not move
      for _, part in ipairs({':held', ':amounts', ':heldsum'}) do redis.call('EXPIRE', k .. part, ttl, 'NX') end
    end
  end
  return 0, 0
end
"""

# The guard's own call: pending writes, then a reservation (or none: a flush).
# Returns {0, 0} when reserved, or {index, spent + held} of the first cap without room.
_RESERVE = LUA_PRELUDE + LUA_WRITES + LUA_RESERVE + "local refused, used = reserve()\nreturn {refused, used}\n"

RESERVE_SCRIPT = LuaScript(_RESERVE)


@dataclass
class Ahead:
    """A reservation made with the request's rate-limit admission, in the
    same script call (proxy.ratelimit), for its first attempt to take: the
    attempt then makes no call of its own. `reservation` None: the caps had
    no room then, and the attempt asks again (the answer may have changed)."""

    caps: tuple[str, ...]  # the caps' counter keys
    amount: int
    reservation: Reservation | None
    taken: bool = False


# Set by the admission in the request's task; read by the attempt's reserve
# in the same task. A context variable keeps it to this request.
reserved_ahead: contextvars.ContextVar[Ahead | None] = contextvars.ContextVar("reserved_ahead", default=None)


# KEYS: counters. ARGV: the lease (ms), then one reservation id per key.
_RENEW = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key .. ':held', 'XX', now + tonumber(ARGV[1]), ARGV[i + 1])
end
return 0
"""

# KEYS: counters. ARGV: what the books say each has spent. A counter that
# exists and says less is raised to it (its time to live kept).
_RESYNC = """
local raised = 0
for i, key in ipairs(KEYS) do
  local spent = redis.call('GET', key)
  if spent and tonumber(spent) < tonumber(ARGV[i]) then
    redis.call('SET', key, ARGV[i], 'KEEPTTL')
    raised = raised + 1
  end
end
return raised
"""


class RedisSpendGuard:
    """Counters in Redis, shared by every process: what is spent, and the
    reservations in flight as leases."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or settings.REDIS_URL
        self.writes = RedisWrites(self.url)
        self._held: dict[str, tuple[str, ...]] = {}  # reservation id -> its counters, while the request lives
        self._renewer: asyncio.Task[None] | None = None

    def _client(self) -> Any:
        return redis_client_for(self.url)

    def counter_key(self, cap: SpendCap) -> str:
        return self._key(cap)

    def _key(self, cap: SpendCap) -> str:
        # "spent", not the earlier "spend" counters, which held spent and reserved in one number.
        return redis_key("spent", cap.key)

    def reserve_section(self, caps: tuple[SpendCap, ...], amount: int) -> tuple[str, list[str], list[int | str]]:
        """A reservation as a script's section (LUA_RESERVE): its id, keys and args."""
        reservation_id = uuid.uuid4().hex
        args: list[int | str] = [len(caps), reservation_id, self._lease_ms(), amount]
        for cap in caps:
            args += [cap.limit_nanos, cap.used_nanos, cap.ttl_seconds or 0]
        return reservation_id, [self._key(c) for c in caps], args

    def adopt(self, caps: tuple[SpendCap, ...], amount: int, reservation_id: str) -> Reservation:
        """A reservation Redis made: renewed while it lives, settled at its end."""
        self._held[reservation_id] = tuple(self._key(c) for c in caps)
        self._renew_start()
        return Reservation(caps=caps, amount=amount, id=reservation_id)

    async def reserve(self, caps: tuple[SpendCap, ...], amount: int) -> Reservation:
        ahead = reserved_ahead.get()
        if ahead is not None and _fits(ahead, caps, amount):
            ahead.taken = True  # made with the admission: no call of its own
            assert ahead.reservation is not None
            return ahead.reservation
        write_keys, write_args = self.writes.take()
        reservation_id, keys, args = self.reserve_section(caps, amount)
        try:
            refused, used = await script_call(self.url, RESERVE_SCRIPT, [*write_keys, *keys], [*write_args, *args])
        except Exception as exc:
            if not redis_failed(exc):
                raise
            self.writes.lost(exc, int(write_args[0]))
            if settings.BILLING_ON_BACKEND_FAILURE != "open":
                raise backend_unavailable("budget counter") from None
            log.warning("budgets and credit not enforced: Redis is unavailable (%s)", exc)
            return Reservation(caps=caps, amount=amount, settled=True)  # nothing was reserved to settle
        if refused:
            raise refusal(caps[int(refused) - 1], amount, int(used))
        return self.adopt(caps, amount, reservation_id)

    def settle_soon(self, reservation: Reservation, actual: int) -> None:
        """Called from a `finally` (sync): the settlement waits in the
        process's pending writes (RedisWrites) for the next call."""
        if reservation.settled:
            return
        reservation.settled = True
        if reservation.lease is not None:  # taken from the process's slice: the slice settles it
            reservation.lease.settle(reservation, actual)
            return
        self._held.pop(reservation.id, None)  # no longer renewed: if the settlement is lost, the lease ends it
        for cap in reservation.caps:
            self.writes.settle(self._key(cap), reservation.id, actual)
        self.writes.soon()

    async def wait_settled(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
        await self.writes.wait()

    def lease_ms(self) -> int:
        return self._lease_ms()

    def _lease_ms(self) -> int:
        return max(int(settings.BILLING_RESERVATION_LEASE_SECONDS * 1000), 100)

    def hold(self, lease_id: str, keys: tuple[str, ...]) -> None:
        """Renew a slice (proxy.leases) in these counters until `unhold`."""
        self._held[lease_id] = keys
        self._renew_start()

    def unhold(self, lease_id: str) -> None:
        self._held.pop(lease_id, None)

    def _renew_start(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_forever())

    async def _renew_forever(self) -> None:
        """The reservations of the requests still open, renewed while they live."""
        await leases_renewed(self._held, self._lease_ms, _RENEW, self._client, "budget reservations")

    def resync_sync(self, spent_by_cap: dict[str, int]) -> int:
        """Raise every counter that says less than the books (`cap key ->
        spent nanos`); returns how many were raised. Synchronous: the
        periodic task and start-up run it off the event loop."""
        if not spent_by_cap:
            return 0
        import redis

        client = redis.Redis.from_url(self.url, socket_timeout=settings.REDIS_TIMEOUT_SECONDS)
        try:
            keys = [redis_key("spent", cap) for cap in spent_by_cap]
            return int(client.eval(_RESYNC, len(keys), *keys, *spent_by_cap.values()))
        finally:
            client.close()


def _fits(ahead: Ahead, caps: tuple[SpendCap, ...], amount: int) -> bool:
    """Whether a reservation made ahead covers this one (the same caps, at
    least this amount: a redaction or another deployment may cost less)."""
    return (
        not ahead.taken
        and ahead.reservation is not None
        and ahead.amount >= amount
        and ahead.caps == tuple(c.key for c in caps)
    )


_guard: LocalSpendGuard | RedisSpendGuard | None = None


def spend_guard() -> LocalSpendGuard | RedisSpendGuard:
    global _guard
    if _guard is None:
        _guard = RedisSpendGuard(settings.REDIS_URL) if settings.REDIS_URL else LocalSpendGuard()
    return _guard
