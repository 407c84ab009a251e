"""Golden cost arithmetic. Every expectation is worked out by hand in the comment above it.

Prices are USD per million tokens (Mtok); money is integer nano-dollars
(1 USD = 10^9 nanos), so $X/Mtok is X * 10^9 nanos per Mtok and a token at
that price costs X * 10^9 / 10^6 = X * 1000 nanos.
"""

from decimal import Decimal

import pytest

from billing.pricing import cost_nanos, nanos_to_usd, price_snapshot, usd_to_nanos
from proxy.context import PriceSnapshot, Usage

# $0.15 in / $0.60 out / $0.075 cached per Mtok (the session's "gpt-up").
GPT_UP = price_snapshot(input_usd=Decimal("0.15"), output_usd=Decimal("0.60"), cached_input_usd=Decimal("0.075"))


def test_a_price_snapshot_holds_exact_integer_nanos_per_million_tokens() -> None:
    # 0.15 * 10^9 = 150_000_000; 0.60 * 10^9 = 600_000_000; 0.075 * 10^9 = 75_000_000
    assert GPT_UP == PriceSnapshot(
        input_nanos_per_mtok=150_000_000,
        cached_input_nanos_per_mtok=75_000_000,
        output_nanos_per_mtok=600_000_000,
    )
    assert all(type(v) is int for v in (GPT_UP.input_nanos_per_mtok, GPT_UP.cached_input_nanos_per_mtok,
                                        GPT_UP.output_nanos_per_mtok))  # fmt: skip


def test_the_cached_input_price_defaults_to_the_input_price() -> None:
    # $2.50/Mtok -> 2_500_000_000 nanos/Mtok for both input and cached input; $10 -> 10_000_000_000
    snap = price_snapshot(input_usd=Decimal("2.50"), output_usd=Decimal("10"), cached_input_usd=None)

    assert snap == PriceSnapshot(2_500_000_000, 2_500_000_000, 10_000_000_000)


def test_a_zero_cached_input_price_is_free_not_the_input_price() -> None:
    # Decimal 0 is an explicit price, not "unset": cached tokens cost 0 nanos.
    snap = price_snapshot(input_usd=Decimal("1"), output_usd=Decimal("2"), cached_input_usd=Decimal("0"))

    assert snap.cached_input_nanos_per_mtok == 0
    # 1_000 cached tokens * 0 = 0; 1 input token * 1_000_000_000 / 10^6 = 1_000
    assert cost_nanos(Usage(input_tokens=1, cached_input_tokens=1_000), snap) == 1_000


def test_nine_decimal_places_convert_exactly() -> None:
    # $0.000000001 is one nano; $123.456789123 is 123_456_789_123 nanos
    assert usd_to_nanos(Decimal("0.000000001")) == 1
    assert usd_to_nanos(Decimal("123.456789123")) == 123_456_789_123
    # Trailing zeros beyond nine places are still exact: 0.1500000000 -> 150_000_000
    assert usd_to_nanos(Decimal("0.1500000000")) == 150_000_000
    assert usd_to_nanos(Decimal("0")) == 0


@pytest.mark.parametrize("usd", ["0.0000000001", "0.1234567891", "1.0000000005"])
def test_a_price_finer_than_one_nano_dollar_is_refused(usd: str) -> None:
    with pytest.raises(ValueError, match="finer than one nano-dollar"):
        price_snapshot(input_usd=Decimal(usd), output_usd=Decimal("1"), cached_input_usd=None)
    with pytest.raises(ValueError, match="finer than one nano-dollar"):
        price_snapshot(input_usd=Decimal("1"), output_usd=Decimal(usd), cached_input_usd=None)
    with pytest.raises(ValueError, match="finer than one nano-dollar"):
        price_snapshot(input_usd=Decimal("1"), output_usd=Decimal("1"), cached_input_usd=Decimal(usd))


def test_input_tokens_alone_cost_their_input_rate() -> None:
    # 1_000 tokens * 150_000_000 nanos/Mtok / 10^6 = 150_000 nanos ($0.00015)
    assert cost_nanos(Usage(input_tokens=1_000), GPT_UP) == 150_000


def test_cached_input_is_billed_at_its_own_rate() -> None:
    # input:  1_000 * 150_000_000 / 10^6 = 150_000
    # cached: 2_000 *  75_000_000 / 10^6 = 150_000
    # total 300_000 nanos (cached at the input rate would have been 450_000)
    assert cost_nanos(Usage(input_tokens=1_000, cached_input_tokens=2_000), GPT_UP) == 300_000


def test_reasoning_tokens_are_billed_at_the_output_rate() -> None:
    # (100 output + 50 reasoning) * 600_000_000 / 10^6 = 150 * 600 = 90_000 nanos
    assert cost_nanos(Usage(output_tokens=100, reasoning_tokens=50), GPT_UP) == 90_000
    # 50 reasoning alone: 50 * 600 = 30_000
    assert cost_nanos(Usage(reasoning_tokens=50), GPT_UP) == 30_000


def test_a_large_request_with_every_bucket_costs_the_sum_of_its_buckets() -> None:
    # At $2.50 in / $1.25 cached / $10 out per Mtok:
    #   200_000 input  * $2.50 / 10^6 = $0.5
    #    50_000 cached * $1.25 / 10^6 = $0.0625
    #   (10_000 output + 5_000 reasoning) * $10 / 10^6 = $0.15
    #   total $0.7125 = 712_500_000 nanos
    snap = price_snapshot(input_usd=Decimal("2.50"), output_usd=Decimal("10"), cached_input_usd=Decimal("1.25"))
    usage = Usage(input_tokens=200_000, cached_input_tokens=50_000, output_tokens=10_000, reasoning_tokens=5_000)

    cost = cost_nanos(usage, snap)

    assert cost == 712_500_000
    assert nanos_to_usd(cost) == Decimal("0.7125")


def test_one_token_at_15_cents_per_million_costs_exactly_150_nanos() -> None:
    # 1 * 150_000_000 / 10^6 = 150 exactly: nothing to round
    assert cost_nanos(Usage(input_tokens=1), GPT_UP) == 150


def test_an_exact_multiple_is_not_rounded_up() -> None:
    # 1_000_000 tokens * 150_000_000 / 10^6 = 150_000_000 exactly (not 150_000_001)
    assert cost_nanos(Usage(input_tokens=1_000_000), GPT_UP) == 150_000_000


def test_a_fraction_of_a_nano_is_rounded_up_to_one_nano() -> None:
    # $0.0000001/Mtok = 100 nanos/Mtok; 1 token * 100 / 10^6 = 0.0001 nanos -> 1 nano
    snap = price_snapshot(input_usd=Decimal("0.0000001"), output_usd=Decimal("0"), cached_input_usd=None)

    assert snap.input_nanos_per_mtok == 100
    assert cost_nanos(Usage(input_tokens=1), snap) == 1


def test_a_cost_just_above_a_whole_nano_rounds_up_to_the_next() -> None:
    # $0.000001/Mtok = 1_000 nanos/Mtok; 1_000_001 tokens * 1_000 / 10^6 = 1_000.001 -> 1_001
    snap = price_snapshot(input_usd=Decimal("0.000001"), output_usd=Decimal("0"), cached_input_usd=None)

    assert cost_nanos(Usage(input_tokens=1_000_001), snap) == 1_001


def test_rounding_happens_once_on_the_total_not_per_bucket() -> None:
    # 500_000 nanos/Mtok on every bucket:
    #   1 input + 1 cached + 1 output = 3 * 500_000 / 10^6 = 1.5 -> 2 nanos
    # Rounding each bucket (0.5 -> 1) would bill 3.
    snap = PriceSnapshot(input_nanos_per_mtok=500_000, cached_input_nanos_per_mtok=500_000,
                         output_nanos_per_mtok=500_000)  # fmt: skip

    assert cost_nanos(Usage(input_tokens=1, cached_input_tokens=1, output_tokens=1), snap) == 2
    # 1 input + 1 cached = 1.0 exactly -> 1 (per-bucket rounding would give 2)
    assert cost_nanos(Usage(input_tokens=1, cached_input_tokens=1), snap) == 1


def test_no_price_costs_nothing() -> None:
    assert cost_nanos(Usage(input_tokens=1_000, output_tokens=1_000), None) == 0


def test_no_tokens_cost_nothing() -> None:
    assert cost_nanos(Usage(), GPT_UP) == 0


def test_costs_are_integers_and_convert_back_to_exact_usd() -> None:
    # 333 tokens * 150 nanos = 49_950 nanos = $0.00004995
    cost = cost_nanos(Usage(input_tokens=333), GPT_UP)

    assert type(cost) is int
    assert cost == 49_950
    assert nanos_to_usd(cost) == Decimal("0.00004995")
    assert isinstance(nanos_to_usd(cost), Decimal)
