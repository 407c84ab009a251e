"""Exact cost arithmetic. Pure: no ORM, no floats."""

from decimal import Decimal

from proxy.context import PriceSnapshot, Usage

NANOS_PER_USD = 10**9
TOKENS_PER_MTOK = 10**6


def usd_to_nanos(usd: Decimal) -> int:
    """Exact for up to nine decimal places; refuses anything finer."""
    nanos = usd * NANOS_PER_USD
    if nanos != nanos.to_integral_value():
        raise ValueError(f"{usd} USD is finer than one nano-dollar")
    return int(nanos)


def price_snapshot(*, input_usd: Decimal, output_usd: Decimal, cached_input_usd: Decimal | None) -> PriceSnapshot:
    """USD per million tokens -> integer nano-dollars per million tokens."""
    return PriceSnapshot(
        input_nanos_per_mtok=usd_to_nanos(input_usd),
        cached_input_nanos_per_mtok=usd_to_nanos(input_usd if cached_input_usd is None else cached_input_usd),
        output_nanos_per_mtok=usd_to_nanos(output_usd),
    )


def cost_nanos(usage: Usage, price: PriceSnapshot | None) -> int:
    """The request's cost in nano-dollars, rounded up once: never under-bill.

    Reasoning tokens are output tokens to every provider that reports them.
    """
    if price is None:
        return 0
    total = (
        usage.input_tokens * price.input_nanos_per_mtok
        + usage.cached_input_tokens * price.cached_input_nanos_per_mtok
        + (usage.output_tokens + usage.reasoning_tokens) * price.output_nanos_per_mtok
    )
    return -(-total // TOKENS_PER_MTOK)


def nanos_to_usd(nanos: int) -> Decimal:
    return Decimal(nanos) / NANOS_PER_USD
