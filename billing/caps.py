"""What a request's spend must fit under: the caps that cover it (each
budget of its tenant and key for the current period, and the tenant's
prepaid credit), what a reservation against them holds, and the refusal a
client gets when one has no room. Plain values read off the key's snapshot:
no ORM and no Redis here (billing.guard counts against them).
"""

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from billing.periods import period_end, period_start
from billing.pricing import nanos_to_usd
from gateway.kernel.context import TenantContext
from gateway.kernel.errors import GatewayError


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


def has_caps(ctx: TenantContext) -> bool:
    """Whether any cap covers this caller's requests (spend_caps is not empty)."""
    return bool(ctx.budgets) or ctx.prepaid


def spend_caps(ctx: TenantContext, now: dt.datetime) -> tuple[SpendCap, ...]:
    """Every limit this caller's request must fit under, for the periods now."""
    if not has_caps(ctx):
        return ()
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
