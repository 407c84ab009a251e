"""A circuit breaker per deployment, so that requests stop going to a
provider that keeps failing and come back once it answers again.

Closed: every request may go. `PROXY_BREAKER_FAILURES` failures within
`PROXY_BREAKER_WINDOW_SECONDS` (a sliding window; successes do not reset it)
open the circuit: the deployment is skipped for
`PROXY_BREAKER_COOLDOWN_SECONDS`. Then it is half-open: exactly one caller
of `allow` gets True, the probe; its success closes the circuit, its failure
opens it for another cooldown. A probe that never reports (a cancelled
request) frees its slot after one cooldown, so the circuit cannot wedge.
Reports from requests that started before the circuit opened change nothing.

One process keeps circuits in memory. With REDIS_URL, the circuits are
shared: Lua scripts make every transition atomic, and each process keeps a
mirror of what it last saw. A healthy deployment costs no round trip per
request: the mirror of a closed circuit is trusted for `MIRROR_SECONDS`, so a
process asks Redis at most once a second per deployment, and learns within
that second that another process opened the circuit (at once when it records
a failure itself). An open circuit is refused from the mirror until its
cooldown ends; from then on Redis decides who probes. All keys expire.

Keys are strings such as "dep:12:gpt-4o" (`deployment_key`, `target_key`).
"""

import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from django.conf import settings

from gateway.kernel.redis import redis_client, redis_key

if TYPE_CHECKING:
    import redis

    from gateway.kernel.context import RouteTarget

log = logging.getLogger(__name__)

State = Literal["closed", "open", "half_open"]
CLOSED: State = "closed"
OPEN: State = "open"
HALF_OPEN: State = "half_open"

MIRROR_SECONDS = 1.0  # how long a process trusts what it last saw in Redis


def deployment_key(deployment_id: int, upstream_model: str = "") -> str:
    """The breaker of one deployment serving one upstream model: a wildcard
    deployment serves many, and one model's outage must not trip the rest."""
    return f"dep:{deployment_id}:{upstream_model}" if upstream_model else f"dep:{deployment_id}"


def target_key(target: "RouteTarget") -> str | None:
    """The breaker a request to `target` reports to (None: a target outside
    any deployment, as the provider-prefix form makes)."""
    if target.deployment_id is None:
        return None
    return deployment_key(target.deployment_id, target.upstream_model)


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    failures: int = 5
    window: float = 30.0  # seconds
    cooldown: float = 30.0  # seconds

    @classmethod
    def from_settings(cls) -> "BreakerConfig":
        return cls(
            failures=max(int(settings.PROXY_BREAKER_FAILURES), 1),
            window=float(settings.PROXY_BREAKER_WINDOW_SECONDS),
            cooldown=float(settings.PROXY_BREAKER_COOLDOWN_SECONDS),
        )


@dataclass(slots=True)
class _Circuit:
    failures: deque[float] = field(default_factory=deque)  # times, oldest first
    open_until: float | None = None  # None: closed
    probe_until: float | None = None  # a probe is out; its slot frees itself then


class LocalBreaker:
    """Circuits in this process's memory. Every method runs without awaiting,
    so each transition is atomic on the event loop."""

    def __init__(self, config: BreakerConfig | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or BreakerConfig.from_settings()
        self.clock = clock
        self._circuits: dict[str, _Circuit] = {}

    async def allow(self, key: str) -> bool:
        circuit = self._circuits.get(key)
        if circuit is None or circuit.open_until is None:
            return True
        now = self.clock()
        if now < circuit.open_until or (circuit.probe_until is not None and now < circuit.probe_until):
            return False
        circuit.probe_until = now + self.config.cooldown
        return True

    async def record_success(self, key: str) -> None:
        circuit = self._circuits.get(key)
        if circuit is not None and circuit.probe_until is not None:
            del self._circuits[key]  # the probe answered: closed, failures forgotten

    async def record_failure(self, key: str) -> None:
        now = self.clock()
        circuit = self._circuits.setdefault(key, _Circuit())
        if circuit.open_until is not None:
            if circuit.probe_until is not None:  # the probe failed: another cooldown
                circuit.open_until, circuit.probe_until = now + self.config.cooldown, None
            return
        circuit.failures.append(now)
        while circuit.failures and circuit.failures[0] <= now - self.config.window:
            circuit.failures.popleft()
        if len(circuit.failures) >= self.config.failures:
            circuit.failures.clear()
            circuit.open_until = now + self.config.cooldown

    def state(self, key: str) -> State:
        circuit = self._circuits.get(key)
        if circuit is None or circuit.open_until is None:
            return CLOSED
        return OPEN if self.clock() < circuit.open_until else HALF_OPEN

    def retry_in(self, key: str) -> float:
        """Seconds until `allow` may say yes again (0: it may now)."""
        circuit = self._circuits.get(key)
        if circuit is None or circuit.open_until is None:
            return 0.0
        until = max(circuit.open_until, circuit.probe_until or 0.0)
        return max(until - self.clock(), 0.0)


# KEYS: open, probe. ARGV: now, probe slot ms, token.
# Returns {0} closed, {1, until} open, {2, until} this caller probes,
# {3, until, ms} half-open with the probe out elsewhere for ms more at most.
_ALLOW = """
local opened = redis.call('GET', KEYS[1])
if not opened then return {0} end
if tonumber(ARGV[1]) < tonumber(opened) then return {1, opened} end
if redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[2]) then return {2, opened} end
return {3, opened, redis.call('PTTL', KEYS[2])}
"""

# KEYS: fails, open, probe. ARGV: now, window, threshold, cooldown, state ttl,
# member, probe token or "". Returns {0} still closed or {1, until} open.
_FAILURE = """
local now = tonumber(ARGV[1])
local opened = redis.call('GET', KEYS[2])
if opened then
  if ARGV[7] ~= '' and redis.call('GET', KEYS[3]) == ARGV[7] then
    opened = string.format('%.6f', now + tonumber(ARGV[4]))
    redis.call('SET', KEYS[2], opened, 'EX', ARGV[5])
    redis.call('DEL', KEYS[3])
  end
  return {1, opened}
end
redis.call('ZADD', KEYS[1], now, ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) * 1000))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  opened = string.format('%.6f', now + tonumber(ARGV[4]))
  redis.call('SET', KEYS[2], opened, 'EX', ARGV[5])
  redis.call('DEL', KEYS[1])
  return {1, opened}
end
return {0}
"""

# KEYS: fails, open, probe. ARGV: probe token. Returns 1 when it closed.
_SUCCESS = """
if redis.call('GET', KEYS[3]) == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
  return 1
end
return 0
"""


@dataclass(slots=True)
class _View:
    """What this process last saw of a shared circuit."""

    state: State
    open_until: float
    trusted_until: float  # then ask Redis again


class RedisBreaker:
    """Circuits shared by every process through Redis (see the module doc).

    If Redis cannot be reached the breaker lets requests through: losing the
    breaker must not take routing down with it.
    """

    def __init__(self, config: BreakerConfig | None = None, clock: Callable[[], float] = time.time) -> None:
        self.config = config or BreakerConfig.from_settings()
        self.clock = clock  # wall clock: open-until times are compared across processes
        self._views: dict[str, _View] = {}
        self._probes: dict[str, str] = {}  # key -> token of the probe this process holds

    def _keys(self, key: str) -> tuple[str, str, str]:
        tag = "{" + key + "}"  # one hash slot, should the Redis be a cluster
        return (
            redis_key("breaker", tag, "fails"),
            redis_key("breaker", tag, "open"),
            redis_key("breaker", tag, "probe"),
        )

    async def allow(self, key: str) -> bool:
        now = self.clock()
        view = self._views.get(key)
        if view is not None:
            if view.state == OPEN:
                if now < view.open_until:
                    return False  # nobody may probe before the cooldown ends
                # the cooldown is over: Redis decides who probes
            elif now < view.trusted_until:
                return view.state == CLOSED
            elif view.state == CLOSED:
                view.trusted_until = now + MIRROR_SECONDS  # meanwhile trusted: one refresh, not a burst
        token = os.urandom(8).hex()
        _, opened, probe = self._keys(key)
        reply = await self._eval(_ALLOW, (opened, probe), now, max(int(self.config.cooldown * 1000), 1), token)
        if reply is None:  # Redis is down: let requests through, ask again in a second
            self._views[key] = _View(CLOSED, 0.0, now + MIRROR_SECONDS)
            return True
        code = int(reply[0])
        if code == 0:
            self._views[key] = _View(CLOSED, 0.0, now + MIRROR_SECONDS)
            return True
        until = float(reply[1])
        if code == 1:
            self._views[key] = _View(OPEN, until, now)
            return False
        if code == 2:
            self._probes[key] = token
            self._views[key] = _View(HALF_OPEN, until, now + MIRROR_SECONDS)
            return True
        # Someone else probes: ask again in a second, or when that probe's slot expires.
        slot_left = max(int(reply[2]), 0) / 1000 if len(reply) > 2 else MIRROR_SECONDS
        self._views[key] = _View(HALF_OPEN, until, now + min(MIRROR_SECONDS, slot_left))
        return False

    async def record_success(self, key: str) -> None:
        token = self._probes.pop(key, None)
        if token is None:  # not this process's probe: nothing to tell (the healthy path)
            return
        closed = await self._eval(_SUCCESS, self._keys(key), token)
        if closed:
            self._views[key] = _View(CLOSED, 0.0, self.clock() + MIRROR_SECONDS)

    async def record_failure(self, key: str) -> None:
        now = self.clock()
        token = self._probes.pop(key, None) or ""
        cfg = self.config
        member = f"{now:.6f}:{os.urandom(4).hex()}"
        # The shared state outlives a cooldown, so a probe can still read it,
        # but not forever: an idle circuit is forgotten (and closed) in the end.
        state_ttl = max(int(cfg.cooldown * 10), 60)
        reply = await self._eval(
            _FAILURE, self._keys(key), now, cfg.window, cfg.failures, cfg.cooldown, state_ttl, member, token
        )
        if reply is not None and int(reply[0]) == 1:
            self._views[key] = _View(OPEN, float(reply[1]), now)

    def state(self, key: str) -> State:
        """As this process last saw it (cheap, may be a second old)."""
        view = self._views.get(key)
        if view is None or view.state == CLOSED:
            return CLOSED
        return OPEN if self.clock() < view.open_until else HALF_OPEN

    def retry_in(self, key: str) -> float:
        """Seconds until `allow` may say yes again, as far as this process knows."""
        view = self._views.get(key)
        if view is None or view.state == CLOSED:
            return 0.0
        left = view.open_until - self.clock()
        return left if left > 0 else MIRROR_SECONDS if view.state == HALF_OPEN else 0.0

    async def _eval(self, script: str, keys: tuple[str, ...], *args: Any) -> Any:
        import redis  # only with REDIS_URL (see gateway.kernel.redis)

        try:
            return await redis_client().eval(script, len(keys), *keys, *args)
        except (redis.RedisError, OSError) as exc:
            log.warning("circuit breaker: Redis unavailable (%s); letting requests through", exc)
            return None


_sync_clients: dict[str, "redis.Redis"] = {}


def shared_state(key: str) -> State:
    """The state as every process sees it, for the admin (a synchronous
    Redis read with REDIS_URL; this process's breaker otherwise)."""
    if not settings.REDIS_URL:
        return breaker().state(key)
    import redis

    client = _sync_clients.get(settings.REDIS_URL)
    if client is None:  # thread-safe (a connection pool); the admin's pages share it
        client = _sync_clients[settings.REDIS_URL] = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2)
    try:
        opened = client.get(redis_key("breaker", "{" + key + "}", "open"))
    except (redis.RedisError, OSError):
        return breaker().state(key)
    if opened is None:
        return CLOSED
    return OPEN if time.time() < float(opened) else HALF_OPEN


_breaker: LocalBreaker | RedisBreaker | None = None
# Told (deployment key, state) whenever a state may have changed: /metrics
# registers here (gateway.metrics), proxy does not import the layer above it.
state_listeners: list[Callable[[str, State], None]] = []


def state_reported(key: str, state: State) -> None:
    for listener in state_listeners:
        listener(key, state)


def breaker() -> LocalBreaker | RedisBreaker:
    """This process's breaker: shared through Redis when REDIS_URL is set.
    (The Redis client it uses is per event loop; the mirror is per process.)"""
    global _breaker
    if _breaker is None:
        _breaker = RedisBreaker() if settings.REDIS_URL else LocalBreaker()
    return _breaker
