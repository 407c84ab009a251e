"""One script call to Redis, and the writes that ride on it.

Every call a process makes to Redis for budgets and rate limits is one Lua
script (billing.guard's reservation, proxy.ratelimit's admission), sent by
its SHA1 (`LuaScript`); the calls of one turn of the event loop go as one
pipeline (`ScriptBatch`, `script_call`). In front of its own work each call
carries the writes the process owes Redis that need no answer
(`RedisWrites`: settlements, releases, slices' spend, token corrections),
so a busy process settles without a round trip of its own.
"""

import asyncio
import functools
import hashlib
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from gateway.kernel.redis import redis_client_for, redis_failed

log = logging.getLogger(__name__)


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


# A flush: the pending writes alone, when no other call came to carry them.
WRITES_SCRIPT = LuaScript(LUA_PRELUDE + LUA_WRITES + "return 0\n")


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
        """One call for every pending write (nothing else to do)."""
        if not len(self):
            return
        keys, args = self.take()
        try:
            await script_call(self.url, WRITES_SCRIPT, keys, args)
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


async def leases_renewed(
    held: dict[str, tuple[str, ...]], lease_ms: Callable[[], int], script: str, client: Callable[[], Any], what: str
) -> None:
    """Every third of a lease, renew every lease `held` lists (its id -> the
    keys it is held in) in one script call, until none is held. `script`
    takes the keys, then the lease (ms) and one id per key."""
    while held:
        await asyncio.sleep(lease_ms() / 3000)
        pairs = [(key, lease_id) for lease_id, keys in list(held.items()) for key in keys]
        if not pairs:
            continue
        try:
            await client().eval(script, len(pairs), *[k for k, _ in pairs], lease_ms(), *[i for _, i in pairs])
        except Exception as exc:
            if not redis_failed(exc):
                raise
            log.warning("%s not renewed (Redis unavailable): %s", what, exc)
