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

One process keeps the windows in memory (proxy.capacity_windows). With
REDIS_URL they are shared by every process (proxy.capacity_redis): one Lua
script checks every candidate and admits the first with room, in one round
trip, and a Redis that does not answer lets requests through.
"""

import math
from collections.abc import Iterable, Mapping

from django.conf import settings

from gateway.kernel.context import RouteTarget
from gateway.kernel.errors import GatewayError
from proxy.breaker import target_key
from proxy.capacity_redis import RedisCapacity, redis_view
from proxy.capacity_windows import FULL_TENTHS, Grant, LocalCapacity, Pick, effective
from proxy.retry import retry_after_seconds


def capacity_key(target: RouteTarget) -> str | None:
    """The window a request to `target` counts in (None: it has no limits).
    Per deployment and upstream model, as the breaker's: a wildcard
    deployment's models have their own limits at the provider."""
    if target.rpm is None and target.tpm is None:
        return None
    return target_key(target)


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


_capacity: LocalCapacity | RedisCapacity | None = None


def capacity() -> LocalCapacity | RedisCapacity:
    """The process's windows: shared in Redis with REDIS_URL, else in memory."""
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


def _shared_view(key: str) -> tuple[int, int, float]:
    if not settings.REDIS_URL:
        local = capacity()
        return local.view(key) if isinstance(local, LocalCapacity) else (FULL_TENTHS, 0, 0.0)
    return redis_view(key)
