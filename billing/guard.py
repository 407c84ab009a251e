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
period. `spend_counters_resync` (at start-up and every minute) raises a
spent counter that fell behind the books (a settlement lost in a blip) to
the books' figure; it never lowers one, since the books trail Redis by the
usage not flushed yet. No ORM here: the database's view (spend at snapshot time) arrives in the
caps, and the usage meter writes spend to the database in batches.
"""

import asyncio
import datetime as dt
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from billing.periods import period_end, period_start
from billing.pricing import nanos_to_usd
from gateway.kernel.context import TenantContext
from gateway.kernel.errors import GatewayError, backend_unavailable
from gateway.kernel.redis import redis_client_for, redis_failed, redis_key

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SpendCap:
    """One limit a request must fit under."""

    key: str  # the counter: "budget:<id>:<period start>" or "credit:<tenant>"
    limit_nanos: int
    used_nanos: int  # spent, as the database knew it when the snapshot loaded
    kind: str  # "budget" or "credit"
    period: str = "total"
    period_start: float = 0.0  # timestamp
    ttl_seconds: int | None = None  # how long a counter outlives its period in Redis


@dataclass(slots=True)
class Reservation:
    caps: tuple[SpendCap, ...]
    amount: int
    settled: bool = field(default=False)
    id: str = ""  # with Redis: the lease in each counter's reservations


_COUNTER_GRACE_SECONDS = 2 * 86400  # keep a period's Redis counter a while after it ends


def budget_counter_key(budget_id: int, start: dt.datetime) -> str:
    return f"budget:{budget_id}:{int(start.timestamp())}"


def credit_counter_key(tenant_id: int) -> str:
    return f"credit:{tenant_id}"


def spend_caps(ctx: TenantContext, now: dt.datetime) -> tuple[SpendCap, ...]:
    """Every limit this caller's request must fit under, for the periods now."""
    caps = []
    for budget in ctx.budgets:
        start = period_start(budget.period, now)
        end = period_end(budget.period, start)
        caps.append(
            SpendCap(
                key=budget_counter_key(budget.id, start),
                limit_nanos=budget.limit_nanos,
                used_nanos=ctx.budget_spent.get((budget.id, start), 0),
                kind="budget",
                period=budget.period,
                period_start=start.timestamp(),
                ttl_seconds=None if end is None else int((end - now).total_seconds()) + _COUNTER_GRACE_SECONDS,
            )
        )
    if ctx.prepaid:
        caps.append(
            SpendCap(
                key=credit_counter_key(ctx.tenant_id),
                limit_nanos=ctx.credit_in_nanos,
                used_nanos=ctx.credit_used_nanos,
                kind="credit",
            )
        )
    return tuple(caps)


def refusal(cap: SpendCap, amount: int, used: int) -> GatewayError:
    from billing.webhook_events import spend_refused  # loaded on the first refusal, not with the request path

    spend_refused(cap, amount, used)  # budget.exceeded or credit.low, handed off: a set lookup once sent
    left = max(cap.limit_nanos - used, 0)
    if cap.kind == "credit":
        return GatewayError(
            402,
            "insufficient_credit",
            f"This request could cost up to ${nanos_to_usd(amount):f}; the prepaid credit left is ${nanos_to_usd(left):f}.",
        )
    end = period_end(cap.period, _from_timestamp(cap.period_start))
    resets = f" It resets at {end:%Y-%m-%d %H:%M} UTC." if end else ""
    return GatewayError(
        429,
        "budget_exceeded",
        f"This request could cost up to ${nanos_to_usd(amount):f}, more than the ${nanos_to_usd(left):f} left "
        f"of the {cap.period} budget of ${nanos_to_usd(cap.limit_nanos):f}.{resets}",
        headers={"x-budget-reset": end.isoformat()} if end else {},
    )


def _from_timestamp(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


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
_EXPIRE_LEASES = """
local function expire_leases(key, now)
  local gone = redis.call('ZRANGEBYSCORE', key .. ':held', '-inf', now)
  for _, id in ipairs(gone) do
    local amount = redis.call('HGET', key .. ':amounts', id)
    if amount then redis.call('DECRBY', key .. ':heldsum', amount) end
    redis.call('HDEL', key .. ':amounts', id)
  end
  if #gone > 0 then redis.call('ZREMRANGEBYSCORE', key .. ':held', '-inf', now) end
end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
"""

# KEYS: one counter per cap. ARGV: reservation id, lease (ms), amount, then
# limit, initial spent, ttl (s) per cap. Returns {0, 0} when reserved, or
# {index, spent + held} of the first cap without room.
_RESERVE = (
    _EXPIRE_LEASES
    + """
local id, lease, amount = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
for i, key in ipairs(KEYS) do
  local limit, initial, ttl = tonumber(ARGV[i * 3 + 1]), ARGV[i * 3 + 2], tonumber(ARGV[i * 3 + 3])
  expire_leases(key, now)
  local spent = redis.call('GET', key)
  if not spent then
    spent = initial
    if ttl > 0 then redis.call('SET', key, initial, 'EX', ttl) else redis.call('SET', key, initial) end
  end
  local used = tonumber(spent) + tonumber(redis.call('GET', key .. ':heldsum') or '0')
  if used + amount > limit then return {i, used} end
end
for i, key in ipairs(KEYS) do
  local ttl = tonumber(ARGV[i * 3 + 3])
  redis.call('ZADD', key .. ':held', now + lease, id)
  redis.call('HSET', key .. ':amounts', id, amount)
  redis.call('INCRBY', key .. ':heldsum', amount)
  for _, part in ipairs({':held', ':amounts', ':heldsum'}) do
    if ttl > 0 then redis.call('EXPIRE', key .. part, ttl) else redis.call('PERSIST', key .. part) end
  end
end
return {0, 0}
"""
)

# KEYS: the caps' counters. ARGV: reservation id, the actual cost. The
# reservation is released (if its lease has not ended already) and the cost
# added to what is spent.
_SETTLE = """
for _, key in ipairs(KEYS) do
  local amount = redis.call('HGET', key .. ':amounts', ARGV[1])
  if amount then
    redis.call('DECRBY', key .. ':heldsum', amount)
    redis.call('HDEL', key .. ':amounts', ARGV[1])
    redis.call('ZREM', key .. ':held', ARGV[1])
  end
  if tonumber(ARGV[2]) ~= 0 then
    if redis.call('EXISTS', key) == 1 then redis.call('INCRBY', key, ARGV[2]) end
  end
end
return 0
"""

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
        self._pending: set[asyncio.Task[None]] = set()
        self._held: dict[str, tuple[str, ...]] = {}  # reservation id -> its counters, while the request lives
        self._renewer: asyncio.Task[None] | None = None

    def _client(self) -> Any:
        return redis_client_for(self.url)

    def _key(self, cap: SpendCap) -> str:
        # "spent", not the earlier "spend" counters, which held spent and reserved in one number.
        return redis_key("spent", cap.key)

    async def reserve(self, caps: tuple[SpendCap, ...], amount: int) -> Reservation:
        client = self._client()
        reservation_id = uuid.uuid4().hex
        args: list[int | str] = [reservation_id, self._lease_ms(), amount]
        for cap in caps:
            args += [cap.limit_nanos, cap.used_nanos, cap.ttl_seconds or 0]
        keys = [self._key(c) for c in caps]
        try:
            refused, used = await client.eval(_RESERVE, len(caps), *keys, *args)
        except Exception as exc:
            if not redis_failed(exc):
                raise
            if settings.BILLING_ON_BACKEND_FAILURE != "open":
                raise backend_unavailable("budget counter") from None
            log.warning("budgets and credit not enforced: Redis is unavailable (%s)", exc)
            return Reservation(caps=caps, amount=amount, settled=True)  # nothing was reserved to settle
        if refused:
            raise refusal(caps[int(refused) - 1], amount, int(used))
        self._held[reservation_id] = tuple(keys)
        self._renew_start()
        return Reservation(caps=caps, amount=amount, id=reservation_id)

    def settle_soon(self, reservation: Reservation, actual: int) -> None:
        """Called from a `finally` (sync): the adjustment runs as a task that
        shutdown waits for."""
        if reservation.settled:
            return
        reservation.settled = True
        self._held.pop(reservation.id, None)  # no longer renewed: if the settlement is lost, the lease ends it
        task = asyncio.get_running_loop().create_task(self._settle(reservation, actual))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _settle(self, reservation: Reservation, actual: int) -> None:
        keys = [self._key(cap) for cap in reservation.caps]
        try:
            await self._client().eval(_SETTLE, len(keys), *keys, reservation.id, actual)
        except Exception:
            # The lease ends the reservation; the resync brings the spend in from the books.
            log.exception("could not settle a reservation of %d nanos in Redis", reservation.amount)

    async def wait_settled(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    def _lease_ms(self) -> int:
        return max(int(settings.BILLING_RESERVATION_LEASE_SECONDS * 1000), 100)

    def _renew_start(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_forever())

    async def _renew_forever(self) -> None:
        """Every third of a lease, renew the reservations of the requests
        still open (one script call for all of them)."""
        while self._held:
            await asyncio.sleep(self._lease_ms() / 3000)
            pairs = [(key, rid) for rid, keys in list(self._held.items()) for key in keys]
            if not pairs:
                continue
            try:
                await self._client().eval(
                    _RENEW, len(pairs), *[k for k, _ in pairs], self._lease_ms(), *[r for _, r in pairs]
                )
            except Exception as exc:
                if not redis_failed(exc):
                    raise
                log.warning("budget reservations not renewed (Redis unavailable): %s", exc)

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


_guard: LocalSpendGuard | RedisSpendGuard | None = None


def spend_guard() -> LocalSpendGuard | RedisSpendGuard:
    global _guard
    if _guard is None:
        _guard = RedisSpendGuard(settings.REDIS_URL) if settings.REDIS_URL else LocalSpendGuard()
    return _guard
