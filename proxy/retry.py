"""When a failed upstream attempt may be tried again, and how long to wait.

Retries happen before the first byte reaches the client only, and move to
another deployment of the route (or a fallback route). The wait is
exponential backoff with full jitter (a random point between 0 and the
doubling bound), so that a fleet of clients does not retry in lock step. A
provider's `Retry-After` is honoured when it fits within the backoff's
maximum; a longer one means "not this deployment for now": the caller moves
on at once or fails.
"""

import asyncio
import datetime as dt
import email.utils
import functools
import math
import random
import time
from dataclasses import dataclass

import aiohttp
from django.conf import settings

from gateway.kernel.errors import GatewayError

_RNG = random.Random()
# The errors proxy.upstream.upstream_failure makes of transport failures.
_TRANSPORT_CODES = frozenset({"upstream_timeout", "upstream_unreachable"})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int  # in total, the first one included
    retry_on_status: frozenset[int]
    backoff_base: float  # seconds
    backoff_max: float  # seconds

    def should_retry(self, status: int | None, exc: BaseException | None) -> bool:
        """Whether another attempt may succeed: connection errors, timeouts
        and the configured statuses (429 and 5xx by default)."""
        if exc is not None:
            if isinstance(exc, GatewayError):
                return exc.code in _TRANSPORT_CODES or exc.status in self.retry_on_status
            # CancelledError is a BaseException, not an Exception: a client
            # that went away is never retried.
            return isinstance(exc, (TimeoutError, asyncio.TimeoutError, aiohttp.ClientConnectionError, ConnectionError))
        return status is not None and status in self.retry_on_status

    def backoff_delay(
        self, attempt: int, retry_after: str | None = None, rng: random.Random | None = None
    ) -> float | None:
        """Seconds to wait after the `attempt`-th attempt (1 for the first)
        failed; None when the provider's Retry-After asks for more than the
        maximum (do not wait: try another deployment or give up)."""
        bound = min(self.backoff_max, self.backoff_base * 2 ** max(attempt - 1, 0))
        jittered = (rng or _RNG).uniform(0, bound)
        asked = retry_after_seconds(retry_after) if retry_after else None
        if asked is None:
            return jittered
        if asked > self.backoff_max:
            return None
        return max(asked, jittered)


def retry_after_seconds(header: str | None, now: float | None = None) -> float | None:
    """A Retry-After value (seconds, or an HTTP date) as seconds from now,
    never negative; None when absent or unreadable."""
    if not header:
        return None
    value = header.strip()
    seconds: float | None
    try:
        seconds = float(value)
    except ValueError:
        seconds = _seconds_until_date(value, time.time() if now is None else now)
    if seconds is None or not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)


def _seconds_until_date(value: str, now: float) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT; a naive one is read as such
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp() - now


def retry_policy() -> RetryPolicy:
    """The policy from the PROXY_RETRY_* settings (parsed once per value)."""
    statuses = settings.PROXY_RETRY_ON_STATUS
    return _policy(
        settings.PROXY_RETRY_ATTEMPTS,
        statuses if isinstance(statuses, str) else tuple(statuses),
        settings.PROXY_RETRY_BACKOFF_BASE,
        settings.PROXY_RETRY_BACKOFF_MAX,
    )


def no_healthy_upstream(model: str, retry_after: float | None) -> GatewayError:
    """The 503 for a request that found every deployment (and fallback)
    unhealthy or failed; Retry-After: when the first breaker may let a probe in."""
    seconds = max(1, math.ceil(retry_after)) if retry_after is not None else 1
    return GatewayError(
        503,
        "no_healthy_upstream",
        f"No provider for the model '{model}' is available right now. Try again in {seconds}s.",
        retryable=True,
        headers={"Retry-After": str(seconds)},
    )


@functools.lru_cache(maxsize=8)
def _policy(attempts: int, statuses: str | tuple[int, ...], base: float, cap: float) -> RetryPolicy:
    return RetryPolicy(
        attempts=max(int(attempts), 1),
        retry_on_status=frozenset(_statuses(statuses)),
        backoff_base=max(float(base), 0.0),
        backoff_max=max(float(cap), 0.0),
    )


def _statuses(value: str | tuple[int, ...]) -> list[int]:
    if isinstance(value, str):
        return [int(part) for part in value.replace(" ", "").split(",") if part]
    return [int(part) for part in value]
