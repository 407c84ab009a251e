"""The counting windows of deployments' upstream limits (proxy.capacity):
the room one attempt takes (`Grant`), what an admission found (`Pick`), and
the windows kept in this process's memory when there is no REDIS_URL
(proxy.capacity_redis keeps the shared ones).

Each limited deployment has a sliding one-minute window of the requests sent
to it and their tokens. An upstream 429 drops its effective limit to a fifth
of its own; every SUCCESSES_PER_TENTH successes give a tenth back.
"""

import math
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.kernel.context import RouteTarget

WINDOW_SECONDS = 60.0
FULL_TENTHS = 10  # the effective limit, in tenths of the deployment's own
THROTTLED_TENTHS = 2  # after an upstream 429: a fifth
SUCCESSES_PER_TENTH = 10


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
