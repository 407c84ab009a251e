"""Exact cost arithmetic. Pure: no ORM, no floats.

Prices arrive as Decimal USD per million tokens and are turned into integer
nano-dollars per million tokens once, when the catalog loads. A request's
cost is the sum over its token buckets at the rates in force, plus the
per-request fee, rounded up once: never under-billed, never by more than
one nano-dollar.
"""

from dataclasses import dataclass
from decimal import Decimal

from billing.media_pricing import MEDIA_RATE_CAPS, media_cost_scaled, media_rates
from gateway.kernel.context import PriceSnapshot, Rates, Usage

NANOS_PER_USD = 10**9
TOKENS_PER_MTOK = 10**6
# The most a price may say. Far above any model's list price (the dearest
# output is a few hundred dollars per million tokens), far below the column's
# 999,999,999.999999999 that a typo such as `--input 1000000000` reaches.
MAX_USD_PER_MTOK = Decimal(100_000)
MAX_REQUEST_FEE_USD = Decimal(100)


def price_amount_check(name: str, value: Decimal) -> None:
    """Raise ValueError, saying what is expected, unless `value` is a price
    the books can hold: finite, from 0 to the cap, in whole nano-dollars."""
    if name in MEDIA_RATE_CAPS:
        cap, unit = MEDIA_RATE_CAPS[name]
    elif name == "request_fee_usd":
        unit, cap = "USD per request", MAX_REQUEST_FEE_USD
    else:
        unit, cap = "USD per million tokens", MAX_USD_PER_MTOK
    if not value.is_finite():
        raise ValueError(f"{name}: {value} is not a price; give {unit}, such as 2.50")
    if value < 0:
        raise ValueError(f"{name}: prices cannot be negative")
    if value > cap:
        raise ValueError(
            f"{name}: {value:f} {unit} is above the {cap:f} this gateway accepts; prices are {unit}"
            + ("" if name in MEDIA_RATE_CAPS else " (gpt-4o's input is 2.50), not per token or per thousand")
        )
    usd_to_nanos(value)  # refuses sub-nano precision


def usd_to_nanos(usd: Decimal) -> int:
    """Exact for up to nine decimal places; refuses anything finer."""
    nanos = usd * NANOS_PER_USD
    if nanos != nanos.to_integral_value():
        raise ValueError(f"{usd:f} USD is finer than one nano-dollar")
    return int(nanos)


def nanos_to_usd(nanos: int) -> Decimal:
    return Decimal(nanos) / NANOS_PER_USD


def usd_string(nanos: int) -> str:
    """Nano-dollars as exact USD with all nine decimals: 13800 -> "0.000013800".

    How amounts are written for people and programs (the usage API, CSV
    exports, admin): a string, never a float, which cannot hold every nano.
    """
    dollars, rest = divmod(abs(nanos), NANOS_PER_USD)
    return f"{'-' if nanos < 0 else ''}{dollars}.{rest:09d}"


@dataclass(frozen=True)
class PriceRates:
    """The Decimal USD-per-million rates of a price row; None falls back."""

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    cache_write_5m: Decimal | None = None
    cache_write_1h: Decimal | None = None
    reasoning: Decimal | None = None
    audio_input: Decimal | None = None
    audio_output: Decimal | None = None
    image_input: Decimal | None = None
    image_output: Decimal | None = None


def rates_from_usd(usd: PriceRates, fallback: Rates | None = None) -> Rates:
    """Integer rates with the fallbacks resolved: cached input -> input,
    1-hour write -> 5-minute write -> input, reasoning -> output. For a
    long-context tier (`fallback` is then the base tier), an empty rate is
    the base tier's: scaling it by the tier's input ratio would be a guess.
    Empty audio rates stay None (charged at the text rate: Rates)."""

    def nanos(value: Decimal | None, default: int) -> int:
        return default if value is None else usd_to_nanos(value)

    def audio(value: Decimal | None, default: int | None) -> int | None:
        return default if value is None else usd_to_nanos(value)

    base_input = usd_to_nanos(usd.input)
    base_output = usd_to_nanos(usd.output)
    write_5m = nanos(usd.cache_write_5m, fallback.cache_write_5m if fallback else base_input)
    return Rates(
        input=base_input,
        cached_input=nanos(usd.cached_input, fallback.cached_input if fallback else base_input),
        cache_write_5m=write_5m,
        cache_write_1h=nanos(usd.cache_write_1h, fallback.cache_write_1h if fallback else write_5m),
        output=base_output,
        reasoning=nanos(usd.reasoning, fallback.reasoning if fallback else base_output),
        audio_input=audio(usd.audio_input, fallback.audio_input if fallback else None),
        audio_output=audio(usd.audio_output, fallback.audio_output if fallback else None),
        image_input=audio(usd.image_input, fallback.image_input if fallback else None),
        image_output=audio(usd.image_output, fallback.image_output if fallback else None),
    )


def audio_rates(rates: Rates) -> tuple[int, int]:
    """The audio input and output rates, an empty one being its text rate's."""
    return (
        rates.input if rates.audio_input is None else rates.audio_input,
        rates.output if rates.audio_output is None else rates.audio_output,
    )


def image_rates(rates: Rates) -> tuple[int, int]:
    """The image input and output token rates, an empty one being its text rate's."""
    return (
        rates.input if rates.image_input is None else rates.image_input,
        rates.output if rates.image_output is None else rates.image_output,
    )


def cost_nanos(usage: Usage, price: PriceSnapshot | None, *, answered: bool = True) -> int:
    """The request's cost in nano-dollars (0 for a model without a price).

    The per-request fee is charged only for an answered request: a provider
    that refused or never answered charges none."""
    if price is None:
        return 0
    rates = price.rates_for(usage.prompt_tokens)
    audio_input, audio_output = audio_rates(rates)
    image_input, image_output = image_rates(rates)
    total = (
        usage.input_tokens * rates.input
        + usage.cached_input_tokens * rates.cached_input
        + usage.cache_write_5m_tokens * rates.cache_write_5m
        + usage.cache_write_1h_tokens * rates.cache_write_1h
        + usage.output_tokens * rates.output
        + usage.reasoning_tokens * rates.reasoning
        + usage.audio_input_tokens * audio_input
        + usage.audio_output_tokens * audio_output
        + usage.image_input_tokens * image_input
        + usage.image_output_tokens * image_output
        + media_cost_scaled(usage, price.media)  # per second, character and image (billing.media_pricing)
    )
    return -(-total // TOKENS_PER_MTOK) + (price.request_fee_nanos if answered else 0)


def worst_case_cost_nanos(price: PriceSnapshot | None, *, prompt_tokens: int, output_tokens: int) -> int:
    """The most a request can cost: what a budget reserves before forwarding.

    Every prompt token at the dearest prompt rate (a cache write, or audio,
    can cost more than plain input) and every output token at the dearest of
    output, reasoning and audio output, in the tier the prompt falls into.
    """
    if price is None:
        return 0
    rates = price.rates_for(prompt_tokens)
    audio_input, audio_output = audio_rates(rates)
    image_input, image_output = image_rates(rates)
    prompt_rate = max(
        rates.input, rates.cached_input, rates.cache_write_5m, rates.cache_write_1h, audio_input, image_input
    )
    output_rate = max(rates.output, rates.reasoning, audio_output, image_output)
    total = prompt_tokens * prompt_rate + output_tokens * output_rate
    return -(-total // TOKENS_PER_MTOK) + price.request_fee_nanos


def snapshot_from_price(row: object) -> PriceSnapshot:
    """A PriceSnapshot from a billing.models.Price row (read by attribute)."""
    field = row.__getattribute__
    base = rates_from_usd(
        PriceRates(
            input=field("input_usd_per_mtok"),
            output=field("output_usd_per_mtok"),
            cached_input=field("cached_input_usd_per_mtok"),
            cache_write_5m=field("cache_write_5m_usd_per_mtok"),
            cache_write_1h=field("cache_write_1h_usd_per_mtok"),
            reasoning=field("reasoning_usd_per_mtok"),
            audio_input=field("audio_input_usd_per_mtok"),
            audio_output=field("audio_output_usd_per_mtok"),
            image_input=field("image_input_usd_per_mtok"),
            image_output=field("image_output_usd_per_mtok"),
        )
    )
    long = None
    if field("long_context_threshold") is not None:
        long_input, long_output = field("long_input_usd_per_mtok"), field("long_output_usd_per_mtok")
        long = rates_from_usd(
            PriceRates(
                input=field("input_usd_per_mtok") if long_input is None else long_input,
                output=field("output_usd_per_mtok") if long_output is None else long_output,
                cached_input=field("long_cached_input_usd_per_mtok"),
                cache_write_5m=field("long_cache_write_5m_usd_per_mtok"),
                cache_write_1h=field("long_cache_write_1h_usd_per_mtok"),
                reasoning=None if long_output is None else field("reasoning_usd_per_mtok"),
            ),
            fallback=base,
        )
    return PriceSnapshot(
        base=base,
        long=long,
        long_context_threshold=field("long_context_threshold"),
        request_fee_nanos=usd_to_nanos(field("request_fee_usd")),
        max_output_tokens=field("max_output_tokens"),
        price_id=field("pk"),
        media=media_rates({name: field(name) for name in MEDIA_RATE_CAPS}),
    )
