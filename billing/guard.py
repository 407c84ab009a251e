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
and settlements wait in the process's pending writes (`RedisWrites`) for
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
import datetime as dt
import functools
import hashlib
import logging
import uuid
import weakref
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
    lease: Any = None  # made from a process's slice (proxy.leases.Lease), which settles it


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


# Every call this process makes to reserve (or to admit under rate limits,
# proxy.ratelimit) is ONE script, read from KEYS and ARGV by cursors in
# sections: first the writes this process left pending (settlements and
# releases, which need no answer), then the section's own work. A section's
# arguments start with its count (0: nothing to do).
LUA_PRELUDE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local ki, ai = 0, 0
local function key() ki = ki + 1 return KEYS[ki] end
local function arg() ai = ai + 1 return ARGV[ai] end
"""

# Pending writes, one key each: 's' settles a reservation (its id, the
# actual cost): released if its lease has not ended already, and the cost
# added to what is spent; 'c' takes from a slice held (proxy.leases): its
# held amount lowered (released when nothing is left) and a cost added to
# what is spent; 'r' releases a request's in-flight slot; 'a' adds a delta
# to a per-minute counter (tokens: the real count less the estimate; a
# slice's unused part given back).
LUA_WRITES = """
for _ = 1, tonumber(arg()) do
  local kind, k = arg(), key()
  if kind == 's' then
    local id, actual = arg(), tonumber(arg())
    local amount = redis.call('HGET', k .. ':amounts', id)
    if amount then
      redis.call('DECRBY', k .. ':heldsum', amount)
      redis.call('HDEL', k .. ':amounts', id)
      redis.call('ZREM', k .. ':held', id)
    end
    if actual ~= 0 and redis.call('EXISTS', k) == 1 then redis.call('INCRBY', k, actual) end
  elseif kind == 'c' then
    local id, cut, actual = arg(), tonumber(arg()), tonumber(arg())
    local amount = tonumber(redis.call('HGET', k .. ':amounts', id) or '0')
    if amount > 0 then  -- else its lease ended already (Redis's clock): nothing held to lower
      cut = math.min(cut, amount)
      redis.call('DECRBY', k .. ':heldsum', cut)
      if cut == amount then
        redis.call('HDEL', k .. ':amounts', id)
        redis.call('ZREM', k .. ':held', id)
      else
        redis.call('HINCRBY', k .. ':amounts', id, -cut)
      end
    end
    if actual ~= 0 and redis.call('EXISTS', k) == 1 then redis.call('INCRBY', k, actual) end
  elseif kind == 'r' then
    redis.call('ZREM', k, arg())
  else
    local delta = tonumber(arg())
    if redis.call('EXISTS', k) == 1 then redis.call('INCRBY', k, delta) end
  end
end
"""

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


@dataclass(frozen=True)
class LuaScript:
    """A script sent by its SHA1 (EVALSHA), and in full only when Redis does
    not know it yet (a restart, a SCRIPT FLUSH)."""

    text: str

    @functools.cached_property
    def sha(self) -> str:
        return hashlib.sha1(self.text.encode()).hexdigest()

    async def __call__(self, client: Any, keys: list[str], args: list[Any]) -> Any:
        from redis.exceptions import NoScriptError

        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await client.eval(self.text, len(keys), *keys, *args)


RESERVE_SCRIPT = LuaScript(_RESERVE)


class ScriptBatch:
    """Script calls made in the same turn of the event loop go to Redis as
    one pipeline: under load, many requests' calls share a socket write, a
    read and a pool checkout (most of a call's CPU on the client). Each
    script still runs atomically on its own in Redis."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._calls: list[tuple[LuaScript, list[str], list[Any], asyncio.Future[Any]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def call(self, script: LuaScript, keys: list[str], args: list[Any]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._calls:
            loop.call_soon(self._send)
        self._calls.append((script, keys, args, future))
        return await future

    def _send(self) -> None:
        calls, self._calls = self._calls, []
        task = asyncio.get_running_loop().create_task(self._execute(calls))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _execute(self, calls: list[tuple[LuaScript, list[str], list[Any], asyncio.Future[Any]]]) -> None:
        from redis.exceptions import NoScriptError

        client = redis_client_for(self.url)
        try:
            if len(calls) == 1:
                script, keys, args, _ = calls[0]
                results: list[Any] = [await script(client, keys, args)]
            else:
                pipe = client.pipeline(transaction=False)
                for script, keys, args, _ in calls:
                    pipe.evalsha(script.sha, len(keys), *keys, *args)
                results = await pipe.execute(raise_on_error=False)
                for i, (script, keys, args, _) in enumerate(calls):
                    if isinstance(results[i], NoScriptError):  # Redis restarted: load it, run it
                        results[i] = await client.eval(script.text, len(keys), *keys, *args)
        except BaseException as error:
            for *_, future in calls:
                if not future.done():
                    future.set_exception(error if isinstance(error, Exception) else ConnectionError(str(error)))
            if not isinstance(error, Exception):
                raise
            return
        for (*_, future), result in zip(calls, results, strict=True):
            if future.done():  # its request was cancelled meanwhile: its leases end what it took
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)


_batches: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, ScriptBatch]]" = weakref.WeakKeyDictionary()


async def script_call(url: str, script: LuaScript, keys: list[str], args: list[Any]) -> Any:
    """Run `script` on the Redis at `url`, batched with the other calls of
    this turn of the event loop (ScriptBatch)."""
    by_url = _batches.setdefault(asyncio.get_running_loop(), {})
    batch = by_url.get(url)
    if batch is None:
        batch = by_url[url] = ScriptBatch(url)
    return await batch.call(script, keys, args)


class RedisWrites:
    """The writes a process owes Redis that need no answer: settlements,
    in-flight releases, token adjustments. They ride on the next script call
    the process makes anyway (an admission, a reservation), in front of its
    own work, so a busy process settles without a round trip of its own;
    when no call comes within BILLING_SETTLE_FLUSH_SECONDS, one call sends
    them all. Until then a finished request's reservation and slot still
    count, which can refuse a request a moment early, never let one overshoot.
    A write lost with its call (Redis unreachable) is not resent: a settle
    that landed could count twice. The lease ends what it held and
    `spend_counters_resync` brings the spend in from the books."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._ops: list[tuple[str, str, tuple[str | int, ...]]] = []  # (kind, key, args)
        self._adjust: dict[str, int] = {}  # tokens counter -> delta, summed per counter
        # (cap key, slice id) -> [cut, actual], summed per slice: a busy key's
        # settlements between two calls are one write, not one per request.
        self._consumed: dict[tuple[str, str], list[int]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task[None]] = set()

    def settle(self, key: str, reservation_id: str, actual: int) -> None:
        self._ops.append(("s", key, (reservation_id, actual)))

    def release(self, key: str, slot: str) -> None:
        self._ops.append(("r", key, (slot,)))

    def consume(self, key: str, lease_id: str, cut: int, actual: int) -> None:
        """Lower a slice's held amount by `cut` and add `actual` to what is
        spent. Summed per slice until sent: Redis lowers the held amount to
        no less than zero either way, and adds the same spend."""
        summed = self._consumed.setdefault((key, lease_id), [0, 0])
        summed[0] += cut
        summed[1] += actual

    def adjust(self, key: str, delta: int) -> None:
        self._adjust[key] = self._adjust.get(key, 0) + delta

    def __len__(self) -> int:
        return len(self._ops) + len(self._adjust) + len(self._consumed)

    def take(self) -> tuple[list[str], list[str | int]]:
        """The pending writes as a script's first section (keys, args); the
        buffer is empty afterwards."""
        ops, self._ops = self._ops, []
        ops += [("c", key, (lease_id, cut, actual)) for (key, lease_id), (cut, actual) in self._consumed.items()]
        ops += [("a", key, (delta,)) for key, delta in self._adjust.items() if delta]
        self._adjust, self._consumed = {}, {}
        keys: list[str] = []
        args: list[str | int] = [len(ops)]
        for kind, key, rest in ops:
            keys.append(key)
            args += [kind, *rest]
        return keys, args

    def soon(self) -> None:
        """Send what is pending within BILLING_SETTLE_FLUSH_SECONDS unless a
        call takes it first."""
        if self._timer is None and len(self):
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(settings.BILLING_SETTLE_FLUSH_SECONDS, self._flush_start)

    def _flush_start(self) -> None:
        self._timer = None
        if len(self):
            task = asyncio.get_running_loop().create_task(self.flush())
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def flush(self) -> None:
        """One call for every pending write (nothing to reserve)."""
        if not len(self):
            return
        keys, args = self.take()
        try:
            await script_call(self.url, RESERVE_SCRIPT, keys, [*args, 0])
        except Exception as exc:
            self.lost(exc, int(args[0]))

    @staticmethod
    def lost(exc: BaseException, count: int) -> None:
        if count:
            log.warning("%d settlements and releases lost (Redis unavailable); their leases end them (%s)", count, exc)

    async def wait(self) -> None:
        """Shutdown, tests: everything pending sent."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flushes:
            await asyncio.gather(*list(self._flushes), return_exceptions=True)
        await self.flush()


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
