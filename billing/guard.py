"""Reserve, then settle: budgets and prepaid credit on the request path.

Before a request is forwarded, its worst-case cost is reserved against
every cap that covers it (each budget of its tenant and key for the current
period, and the tenant's prepaid credit); if any cap would be exceeded the
request is refused. When the request ends, the reservation is replaced by
the real cost. A cap's counter therefore always holds what was spent plus
what is in flight, so a burst of concurrent requests cannot overshoot it.

One process keeps the counters in memory: reserve is a synchronous check
and increment, which nothing else on the event loop can interleave. With
REDIS_URL set, a Lua script does the same atomically across processes.
No ORM here: the database's view (spend at snapshot time) arrives in the
caps, and the usage meter writes spend to the database in batches.
"""

import asyncio
import datetime as dt
import logging
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


_COUNTER_GRACE_SECONDS = 2 * 86400  # keep a period's Redis counter a while after it ends


def spend_caps(ctx: TenantContext, now: dt.datetime) -> tuple[SpendCap, ...]:
    """Every limit this caller's request must fit under, for the periods now."""
    caps = []
    for budget in ctx.budgets:
        start = period_start(budget.period, now)
        end = period_end(budget.period, start)
        caps.append(
            SpendCap(
                key=f"budget:{budget.id}:{int(start.timestamp())}",
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
                key=f"credit:{ctx.tenant_id}",
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


# KEYS: one counter per cap. ARGV: amount, then limit, initial used, ttl per cap.
# Returns 0 when reserved, or the 1-based index of the cap that refused
# followed by that counter's value.
_RESERVE = """
local amount = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 + (i - 1) * 3])
  local initial = ARGV[3 + (i - 1) * 3]
  local ttl = tonumber(ARGV[4 + (i - 1) * 3])
  local used = redis.call('GET', key)
  if not used then
    used = initial
    if ttl > 0 then redis.call('SET', key, initial, 'EX', ttl) else redis.call('SET', key, initial) end
  end
  if tonumber(used) + amount > limit then return {i, tonumber(used)} end
end
for _, key in ipairs(KEYS) do redis.call('INCRBY', key, amount) end
return {0, 0}
"""


class RedisSpendGuard:
    """Counters in Redis, shared by every process; each holds spent + reserved."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or settings.REDIS_URL
        self._pending: set[asyncio.Task[None]] = set()

    def _client(self) -> Any:
        return redis_client_for(self.url)

    def _key(self, cap: SpendCap) -> str:
        return redis_key("spend", cap.key)

    async def reserve(self, caps: tuple[SpendCap, ...], amount: int) -> Reservation:
        client = self._client()
        args: list[int] = [amount]
        for cap in caps:
            args += [cap.limit_nanos, cap.used_nanos, cap.ttl_seconds or 0]
        try:
            refused, used = await client.eval(_RESERVE, len(caps), *[self._key(c) for c in caps], *args)
        except Exception as exc:
            if not redis_failed(exc):
                raise
            if settings.BILLING_ON_BACKEND_FAILURE != "open":
                raise backend_unavailable("budget counter") from None
            log.warning("budgets and credit not enforced: Redis is unavailable (%s)", exc)
            return Reservation(caps=caps, amount=amount, settled=True)  # nothing was reserved to settle
        if refused:
            raise refusal(caps[int(refused) - 1], amount, int(used))
        return Reservation(caps=caps, amount=amount)

    def settle_soon(self, reservation: Reservation, actual: int) -> None:
        """Called from a `finally` (sync): the adjustment runs as a task that
        shutdown waits for."""
        if reservation.settled:
            return
        reservation.settled = True
        task = asyncio.get_running_loop().create_task(self._settle(reservation, actual))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _settle(self, reservation: Reservation, actual: int) -> None:
        delta = actual - reservation.amount
        if not delta:
            return
        try:
            pipe = self._client().pipeline(transaction=False)
            for cap in reservation.caps:
                pipe.incrby(self._key(cap), delta)
            await pipe.execute()
        except Exception:
            log.exception("could not settle a reservation of %d nanos in Redis", reservation.amount)

    async def wait_settled(self) -> None:
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)


_guard: LocalSpendGuard | RedisSpendGuard | None = None


def spend_guard() -> LocalSpendGuard | RedisSpendGuard:
    global _guard
    if _guard is None:
        _guard = RedisSpendGuard(settings.REDIS_URL) if settings.REDIS_URL else LocalSpendGuard()
    return _guard
