"""Deployments' upstream limits shared by every process, in Redis
(proxy.capacity, with REDIS_URL): one Lua script checks every candidate and
admits the first with room, in one round trip. What the attempts report
(successes, 429s, token corrections) is kept in memory and travels with the
process's next admission, in the same round trip, or within
REPORT_DELAY_SECONDS (a 429 at once). A Redis that does not answer lets
requests through (logged): the provider's own limits still apply, while
refusing would turn a Redis blip into an outage of every limited deployment.
"""

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from gateway.kernel.context import RouteTarget
from gateway.kernel.redis import redis_client, redis_failed, redis_key
from proxy.capacity_windows import FULL_TENTHS, WINDOW_SECONDS, Grant, Pick

log = logging.getLogger(__name__)
REPORT_DELAY_SECONDS = 1.0
_STATE_TTL_MS = 3_600_000  # an idle deployment forgets a past 429 after an hour


@dataclass(slots=True)
class _Report:
    """What this process's attempts told about one deployment, not yet in Redis."""

    successes: int = 0
    throttled: bool = False
    retry_ms: int = 0
    tokens: dict[str, int] = field(default_factory=dict)  # grant id -> tokens used (-1: not sent)


# Per deployment, in Redis (one hash tag, so a cluster keeps them together):
# KEY a hash (tenths, ok: successes since the last step, until: skipped until
# then, in ms of Redis's clock, tsum: tokens in the window), KEY:log the
# window's requests (a sorted set of grant ids scored by when they were
# sent), KEY:tok each grant's tokens.
_EXPIRE = """
local function expire(state, log, tok, now, window)
  local gone = redis.call('ZRANGEBYSCORE', log, '-inf', now - window)
  if #gone > 0 then
    local freed = 0
    for _, amount in ipairs(redis.call('HMGET', tok, unpack(gone))) do
      if amount then freed = freed + tonumber(amount) end
    end
    redis.call('HDEL', tok, unpack(gone))
    redis.call('ZREMRANGEBYSCORE', log, '-inf', now - window)
    redis.call('HINCRBY', state, 'tsum', -freed)
  end
  local count = redis.call('ZCARD', log)
  if count == 0 then redis.call('HSET', state, 'tsum', 0) end
  return count
end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
"""

# KEYS: three per candidate, in order of preference. ARGV: the grant id, its
# tokens, the window (ms), then rpm and tpm per candidate (0: none). Returns
# {index, 0} for the candidate admitted, or {0, ms until one may have room}.
_ADMIT = (
    _EXPIRE
    + """
local id, tokens, window = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local soonest = -1
for i = 1, #KEYS / 3 do
  local state, log, tok = KEYS[i * 3 - 2], KEYS[i * 3 - 1], KEYS[i * 3]
  local rpm, tpm = tonumber(ARGV[i * 2 + 2]), tonumber(ARGV[i * 2 + 3])
  local count = expire(state, log, tok, now, window)
  local s = redis.call('HMGET', state, 'tenths', 'until', 'tsum')
  local tenths, untilms, tsum = tonumber(s[1] or '10'), tonumber(s[2] or '0'), tonumber(s[3] or '0')
  local wait = 0
  if untilms > now then wait = untilms - now end
  if wait == 0 and rpm > 0 then
    local limit = math.max(1, math.floor(rpm * tenths / 10))
    if count + 1 > limit then
      local oldest = redis.call('ZRANGE', log, count - limit, count - limit, 'WITHSCORES')
      wait = tonumber(oldest[2]) + window - now
    end
  end
  if wait == 0 and tpm > 0 and count > 0 then
    local need = tsum + tokens - math.max(1, math.floor(tpm * tenths / 10))
    if need > 0 then
      local sent = redis.call('ZRANGE', log, 0, -1, 'WITHSCORES')
      wait = tonumber(sent[#sent]) + window - now  -- larger than the limit: once the window is empty
      for j = 1, #sent, 2 do
        need = need - tonumber(redis.call('HGET', tok, sent[j]) or '0')
        if need <= 0 then wait = tonumber(sent[j + 1]) + window - now break end
      end
    end
  end
  if wait <= 0 then
    redis.call('ZADD', log, now, id)
    redis.call('HSET', tok, id, tokens)
    redis.call('HINCRBY', state, 'tsum', tokens)
    redis.call('PEXPIRE', log, window * 2)
    redis.call('PEXPIRE', tok, window * 2)
    redis.call('PEXPIRE', state, ARGV[#ARGV])
    return {i, 0}
  end
  if soonest < 0 or wait < soonest then soonest = wait end
end
return {0, soonest}
"""
)

# KEYS: one deployment's three keys. ARGV: the window (ms), the state's ttl
# (ms), successes, 1 when throttled, the Retry-After (ms), then grant id and
# tokens pairs (-1: never sent, its room given back). A throttle happened
# before the successes reported with it.
_REPORT = (
    _EXPIRE
    + """
local state, log, tok = KEYS[1], KEYS[2], KEYS[3]
expire(state, log, tok, now, tonumber(ARGV[1]))
local ok, retry = tonumber(ARGV[3]), tonumber(ARGV[5])
if ARGV[4] == '1' then
  local tenths = tonumber(redis.call('HGET', state, 'tenths') or '10')
  redis.call('HSET', state, 'tenths', math.min(tenths, 2), 'ok', 0)
  local untilms = tonumber(redis.call('HGET', state, 'until') or '0')
  if retry > 0 and now + retry > untilms then redis.call('HSET', state, 'until', now + retry) end
end
if ok > 0 then
  local tenths = tonumber(redis.call('HGET', state, 'tenths') or '10')
  if tenths < 10 then
    local n = redis.call('HINCRBY', state, 'ok', ok)
    local steps = math.floor(n / 10)
    if steps > 0 then redis.call('HSET', state, 'tenths', math.min(10, tenths + steps), 'ok', n - steps * 10) end
  end
end
for j = 6, #ARGV, 2 do
  local held = redis.call('HGET', tok, ARGV[j])
  if held then
    local used = tonumber(ARGV[j + 1])
    if used < 0 then
      redis.call('HDEL', tok, ARGV[j])
      redis.call('ZREM', log, ARGV[j])
      redis.call('HINCRBY', state, 'tsum', -tonumber(held))
    else
      redis.call('HSET', tok, ARGV[j], used)
      redis.call('HINCRBY', state, 'tsum', used - tonumber(held))
    end
  end
end
redis.call('PEXPIRE', state, tonumber(ARGV[2]))
return 0
"""
)


def _keys(key: str) -> list[str]:
    base = redis_key("capacity", "{" + key + "}")
    return [base, base + ":log", base + ":tok"]


class RedisCapacity:
    """Windows in Redis, shared by every process."""

    def __init__(self) -> None:
        self._reports: dict[str, _Report] = {}
        self._flushers: set[asyncio.Task[None]] = set()
        self._flush_at = math.inf  # when the soonest flush scheduled runs
        # Deployments this process saw answer 429 with a Retry-After, until
        # then: skipped without asking Redis, which may not have the report yet.
        self._skipped: dict[str, float] = {}

    async def pick(self, order: Sequence[tuple[RouteTarget, str]], tokens: int) -> Pick:
        if self._skipped:
            now = time.monotonic()
            self._skipped = {key: until for key, until in self._skipped.items() if until > now}
            waits = [self._skipped[key] - now for _, key in order if key in self._skipped]
            order = [(target, key) for target, key in order if key not in self._skipped]
            if not order:
                return Pick(None, retry_in=min(waits))
        grant_id = uuid.uuid4().hex
        keys: list[str] = []
        args: list[int | str] = [grant_id, tokens, int(WINDOW_SECONDS * 1000)]
        for target, key in order:
            keys += _keys(key)
            args += [target.rpm or 0, target.tpm or 0]
        args.append(_STATE_TTL_MS)
        client = redis_client()
        try:
            if self._reports:  # what this process learnt travels in the same round trip
                pipe = client.pipeline(transaction=False)
                self._report_into(pipe)
                pipe.eval(_ADMIT, len(keys), *keys, *args)
                admitted, wait_ms = (await pipe.execute())[-1]
            else:
                admitted, wait_ms = await client.eval(_ADMIT, len(keys), *keys, *args)
        except Exception as exc:
            if not redis_failed(exc):
                raise
            log.warning("deployment limits not applied: Redis is unavailable (%s)", exc)
            return Pick(order[0][0])
        if admitted:
            target, key = order[int(admitted) - 1]
            return Pick(target, Grant(key, grant_id, tokens))
        return Pick(None, retry_in=max(int(wait_ms), 1) / 1000)

    def succeeded(self, key: str) -> None:
        self._reports.setdefault(key, _Report()).successes += 1
        self._flush_soon(REPORT_DELAY_SECONDS)

    def throttled(self, key: str, retry_in: float) -> None:
        report = self._reports.setdefault(key, _Report())
        report.throttled, report.successes = True, 0
        report.retry_ms = max(report.retry_ms, int(retry_in * 1000))
        if retry_in > 0:
            self._skipped[key] = max(self._skipped.get(key, 0.0), time.monotonic() + retry_in)
        self._flush_soon(0.0)  # every process should back off now, not in a second

    def settle(self, grant: Grant, tokens: int) -> None:
        if tokens != grant.tokens:
            self._reports.setdefault(grant.key, _Report()).tokens[grant.id] = tokens
            self._flush_soon(REPORT_DELAY_SECONDS)

    def _report_into(self, pipe: Any) -> None:
        reports, self._reports = self._reports, {}
        for key, report in reports.items():
            args: list[int | str] = [
                int(WINDOW_SECONDS * 1000),
                _STATE_TTL_MS,
                report.successes,
                1 if report.throttled else 0,
                report.retry_ms,
            ]
            for grant_id, used in report.tokens.items():
                args += [grant_id, used]
            pipe.eval(_REPORT, 3, *_keys(key), *args)

    def _flush_soon(self, delay: float) -> None:
        """A flush within `delay` seconds. One due sooner is enough; a later
        one is left to run (cancelling it could lose reports it is sending)."""
        at = time.monotonic() + delay
        if self._flush_at <= at:
            return
        self._flush_at = at
        task = asyncio.get_running_loop().create_task(self._flush_after(delay))
        self._flushers.add(task)
        task.add_done_callback(self._flushers.discard)

    async def _flush_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        await self.flush()

    async def flush(self) -> None:
        """Send what is reported and not sent yet (also at shutdown)."""
        self._flush_at = math.inf
        if not self._reports:
            return
        pipe = redis_client().pipeline(transaction=False)
        self._report_into(pipe)
        try:
            await pipe.execute()
        except Exception as exc:
            if not redis_failed(exc):
                raise
            log.warning("deployment capacity reports lost (Redis unavailable): %s", exc)


_sync_clients: dict[str, Any] = {}


def redis_view(key: str) -> tuple[int, int, float]:
    """(tenths, requests in the window, seconds skipped still) as every
    process sees them, for the admin: a synchronous read (the admin is sync)."""
    import redis

    client = _sync_clients.get(settings.REDIS_URL)
    if client is None:  # thread-safe (a connection pool); the admin's pages share it
        client = _sync_clients[settings.REDIS_URL] = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2)
    state, log_key, _ = _keys(key)
    try:
        tenths, until = client.hmget(state, "tenths", "until")
        seconds, micros = client.time()
        now_ms = seconds * 1000 + micros // 1000
        sent = client.zcount(log_key, now_ms - int(WINDOW_SECONDS * 1000) + 1, "+inf")
    except (redis.RedisError, OSError):
        return FULL_TENTHS, 0, 0.0
    skipped = (int(until) - now_ms) / 1000 if until else 0.0
    return int(tenths or FULL_TENTHS), int(sent), max(skipped, 0.0)
