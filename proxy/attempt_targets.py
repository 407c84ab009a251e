"""Which deployment the next attempt goes to (proxy.forward): one not tried
yet, whose circuit breaker lets it in (proxy.breaker) and with room under its
upstream limits (proxy.capacity); and, when every circuit is open, the one
open longest.
"""

from collections.abc import Iterator
from typing import Any

from gateway.kernel.context import RoutePlan, RouteTarget
from proxy.breaker import state_reported, target_key
from proxy.capacity import capacity_pick, capacity_settle
from proxy.capacity_windows import Grant
from proxy.routing import choose


async def healthy_choice(
    plan: RoutePlan, tried: set[int], circuit: Any, tokens: int
) -> tuple[RouteTarget | None, Grant | None, float]:
    """A deployment not tried yet, with room under its upstream limits
    (proxy.capacity), whose breaker lets this request in; or none and, when
    some were only full, the seconds until one may have room (else 0). Only
    the chosen one's breaker is asked (asking uses up a half-open probe)."""
    excluded = set(tried)
    while True:
        picked = await capacity_pick(_preference(plan, excluded, circuit), tokens)
        target = picked.target
        if target is None:
            return None, None, picked.retry_in
        key = target_key(target)
        if key is None or await circuit.allow(key):
            return target, picked.grant, 0.0
        capacity_settle(picked.grant, -1)  # not sent: its room back
        excluded.add(target.deployment_id)  # type: ignore[arg-type]  # a breaker's key: from the database


def _preference(plan: RoutePlan, excluded: set[int], circuit: Any) -> Iterator[RouteTarget]:
    """The deployments not excluded and not open, best first (each drawn as
    `choose` draws: the best priority, then by weight); lazily, so a first
    choice without limits costs one draw."""
    seen = set(excluded)
    while (target := choose(plan, exclude=seen, healthy=lambda t: _not_open(circuit, target_key(t)))) is not None:
        yield target
        if target.deployment_id is None:
            return  # cannot be excluded: it would be drawn again
        seen.add(target.deployment_id)


async def breaker_report(circuit: Any, key: str, *, failed: bool) -> None:
    """Tell the breaker how the call went; its state goes to /metrics when
    it may have changed (a failure, or a success while not closed)."""
    before = circuit.state(key)
    await (circuit.record_failure(key) if failed else circuit.record_success(key))
    if failed or before != "closed":
        state_reported(key, circuit.state(key))


def _not_open(circuit: Any, key: str | None) -> bool:
    return key is None or circuit.state(key) != "open"


def longest_open(plans: list[RoutePlan], tried: set[int], circuit: Any) -> RouteTarget | None:
    """The untried deployment whose circuit closes soonest (it opened first)."""
    candidates = [
        (circuit.retry_in(key), n, target)
        for n, target in enumerate(t for p in plans for t in p.deployments if t.deployment_id not in tried)
        if (key := target_key(target)) is not None
    ]
    return min(candidates, key=lambda c: (c[0], c[1]))[2] if candidates else None


def soonest_retry(plans: list[RoutePlan], circuit: Any) -> float | None:
    """The seconds until the first circuit of these routes lets a request in."""
    waits = [circuit.retry_in(key) for p in plans for t in p.deployments if (key := target_key(t)) is not None]
    return min(waits) if waits else None
