"""Upstream limits per deployment: the requests and tokens per minute its
provider allows (`route_create --rpm N --tpm N`), which the gateway never
exceeds, and which adapt to what the provider says.

Each limited deployment has a sliding one-minute window of the requests sent
to it (and their tokens: the request's estimate, corrected to what the
answer used once it ends). The forward step asks for room in its
deployments in order of preference (`capacity_pick`): the first with room
takes the request; when none has, it waits (proxy.forward) and is then
refused with 429 `upstream_capacity`.

Adaptive: an upstream 429 drops the deployment's effective limit to a fifth
of its own and restarts the count of successes; every ten successes give a
tenth back, up to the full limit. The 429's `Retry-After` (or
`retry-after-ms`) skips the deployment until then.

One process keeps the windows in memory. With REDIS_URL they are shared by
every process: one Lua script checks every candidate and admits the first
with room, in one round trip. What the attempts report (successes, 429s,
token corrections) is kept in memory and travels with the process's next
admission, in the same round trip, or within REPORT_DELAY_SECONDS (a 429 at
once). A Redis that does not answer lets requests through (logged): the
provider's own limits still apply, while refusing would turn a Redis blip
into an outage of every limited deployment.
"""

import asyncio
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from gateway.kernel.context import RouteTarget
from gateway.kernel.errors import GatewayError
from gateway.kernel.redis import redis_client, redis_failed, redis_key
from proxy.breaker import target_key
from proxy.retry import retry_after_seconds

log = logging.getLogger(__name__)
WINDOW_SECONDS = 60.0
FULL_TENTHS = 10  # the effective limit, in tenths of the deployment's own
THROTTLED_TENTHS = 2  # after an upstream 429: a fifth
SUCCESSES_PER_TENTH = 10
REPORT_DELAY_SECONDS = 1.0
_STATE_TTL_MS = 3_600_000  # an idle deployment forgets a past 429 after an hour


def capacity_key(target: RouteTarget) -> str | None:
    """The window a request to `target` counts in (None: it has no limits).
    Per deployment and upstream model, as the breaker's: a wildcard
    deployment's models have their own limits at the provider."""
    if target.rpm is None and target.tpm is None:
        return None
    return target_key(target)


def effective(limit: int, tenths: int) -> int:
    return max(1, limit * tenths // FULL_TENTHS)


@dataclass(frozen=True, slots=True)
class Grant:
    """Room taken in one deployment's window by one attempt."""

    key: str
    id: str
    tokens: int


@dataclass(frozen=True, slots=True)
class Pick:
    """The deployment that has room (and its grant, None when it has no
    limits), or none and the seconds until one may have room."""

    target: RouteTarget | None
    grant: Grant | None = None
    retry_in: float = 0.0


@dataclass(slots=True)
class _Report:
    """What this process's attempts told about one deployment, not yet in Redis."""

    successes: int = 0
    throttled: bool = False
    retry_ms: int = 0
    tokens: dict[str, int] = field(default_factory=dict)  # grant id -> tokens used (-1: not sent)


def capacity_refusal(model: str, retry_in: float) -> GatewayError:
    seconds = max(1, math.ceil(retry_in))
    return GatewayError(
        429,
        "upstream_capacity",
        f"Every deployment of the model '{model}' is at the request or token limit its provider allows. "
        f"Try again in {seconds}s.",
        retryable=True,
        headers={"Retry-After": str(seconds)},
    )


def throttle_seconds(headers: Mapping[str, str]) -> float:
    """How long an upstream 429 asks to wait: `retry-after-ms` (OpenAI's),
    else `Retry-After` (seconds or a date); 0 when it does not say."""
    try:
        ms = float(headers.get("retry-after-ms") or "nan")
    except ValueError:
        ms = math.nan
    if math.isfinite(ms) and ms > 0:
        return ms / 1000
    return retry_after_seconds(headers.get("Retry-After")) or 0.0


@dataclass(slots=True)
class _Window:
    sent: deque[tuple[float, str, int]] = field(default_factory=deque)  # (when, grant id, tokens), oldest first
    tokens: int = 0
    tenths: int = FULL_TENTHS
    successes: int = 0
    until: float = 0.0  # skipped until then (Retry-After)


class LocalCapacity:
    """Windows in this process's memory; every method runs without awaiting,
    so a check and its admission are atomic on the event loop."""

    def __init__(self) -> None:
        self._windows: dict[str, _Window] = {}

    async def pick(self, order: Sequence[tuple[RouteTarget, str]], tokens: int) -> Pick:
        now = time.monotonic()
        soonest = math.inf
        for target, key in order:
            window = self._windows.setdefault(key, _Window())
            wait = self._wait(window, target, tokens, now)
            if wait <= 0:
                grant = Grant(key, uuid.uuid4().hex, tokens)
                window.sent.append((now, grant.id, tokens))
                window.tokens += tokens
                return Pick(target, grant)
            soonest = min(soonest, wait)
        return Pick(None, retry_in=soonest)

    def _wait(self, window: _Window, target: RouteTarget, tokens: int, now: float) -> float:
        while window.sent and window.sent[0][0] <= now - WINDOW_SECONDS:
            window.tokens -= window.sent.popleft()[2]
        if window.until > now:
            return window.until - now
        sent = window.sent
        if target.rpm is not None:
            limit = effective(target.rpm, window.tenths)
            if len(sent) + 1 > limit:
                return sent[len(sent) - limit][0] + WINDOW_SECONDS - now
        if target.tpm is not None and sent:  # an empty window lets any one request in
            limit = effective(target.tpm, window.tenths)
            need = window.tokens + tokens - limit
            if need > 0:
                for when, _, used in sent:
                    need -= used
                    if need <= 0:
                        return when + WINDOW_SECONDS - now
                return sent[-1][0] + WINDOW_SECONDS - now  # larger than the limit: once the window is empty
        return 0.0

    def succeeded(self, key: str) -> None:
        window = self._windows.get(key)
        if window is None or window.tenths >= FULL_TENTHS:
            return
        window.successes += 1
        if window.successes >= SUCCESSES_PER_TENTH:
            window.tenths, window.successes = window.tenths + 1, 0

    def throttled(self, key: str, retry_in: float) -> None:
        window = self._windows.setdefault(key, _Window())
        window.tenths, window.successes = min(window.tenths, THROTTLED_TENTHS), 0
        window.until = max(window.until, time.monotonic() + retry_in)

    def settle(self, grant: Grant, tokens: int) -> None:
        """The attempt used `tokens` (-1: it was never sent: its room is given back)."""
        window = self._windows.get(grant.key)
        if window is None:
            return
        for index, (when, grant_id, held) in enumerate(window.sent):
            if grant_id == grant.id:
                if tokens < 0:
                    del window.sent[index]
                    window.tokens -= held
                else:
                    window.sent[index] = (when, grant_id, tokens)
                    window.tokens += tokens - held
                return

    def view(self, key: str) -> tuple[int, int, float]:
        """(tenths, requests in the window, seconds skipped still) for the admin."""
        window = self._windows.get(key)
        if window is None:
            return FULL_TENTHS, 0, 0.0
        now = time.monotonic()
        recent = sum(1 for when, _, _ in window.sent if when > now - WINDOW_SECONDS)
        return window.tenths, recent, max(window.until - now, 0.0)


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


_capacity: LocalCapacity | RedisCapacity | None = None


def capacity() -> LocalCapacity | RedisCapacity:
    global _capacity
    if _capacity is None:
        _capacity = RedisCapacity() if settings.REDIS_URL else LocalCapacity()
    return _capacity


async def capacity_pick(order: Iterable[RouteTarget], tokens: int) -> Pick:
    """The first of `order` (best first) with room for a request of about
    `tokens` tokens. Only limited deployments are asked, and only those
    ahead of the first one without limits, which takes the request when
    they are all full. No round trip when the first has no limits."""
    limited: list[tuple[RouteTarget, str]] = []
    for target in order:
        key = capacity_key(target)
        if key is None:
            if not limited:
                return Pick(target)
            picked = await capacity().pick(limited, tokens)
            return picked if picked.target is not None else Pick(target)
        limited.append((target, key))
    if not limited:
        return Pick(None, retry_in=0.0)
    return await capacity().pick(limited, tokens)


def capacity_outcome(grant: Grant | None, status: int, headers: Mapping[str, str]) -> None:
    """The upstream's answer to an attempt that held `grant`: a 429 lowers
    the deployment's limit (and honours Retry-After); a success earns some back."""
    if grant is None:
        return
    if status == 429:
        capacity().throttled(grant.key, throttle_seconds(headers))
    elif status < 400:
        capacity().succeeded(grant.key)


def capacity_settle(grant: Grant | None, tokens: int) -> None:
    """The attempt's tokens as the answer counted them (-1: it was never sent)."""
    if grant is not None:
        capacity().settle(grant, tokens)


def capacity_shown(key: str, rpm: int | None, tpm: int | None) -> str:
    """A deployment's effective limits as every process sees them, for the
    admin: "rpm 2/10 (1 sent) · tpm 200/1000", "skipped 12s" after a
    Retry-After. A synchronous read (the admin is sync); "-" without limits."""
    if rpm is None and tpm is None:
        return "-"
    tenths, sent, skipped = _shared_view(key)
    parts = []
    if rpm is not None:
        parts.append(f"rpm {effective(rpm, tenths)}/{rpm} ({sent} sent)")
    if tpm is not None:
        parts.append(f"tpm {effective(tpm, tenths)}/{tpm}")
    if skipped > 0:
        parts.append(f"skipped {math.ceil(skipped)}s")
    return " · ".join(parts)


_sync_clients: dict[str, Any] = {}


def _shared_view(key: str) -> tuple[int, int, float]:
    if not settings.REDIS_URL:
        local = capacity()
        return local.view(key) if isinstance(local, LocalCapacity) else (FULL_TENTHS, 0, 0.0)
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
