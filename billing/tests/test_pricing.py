"""Golden cost arithmetic: every expectation is worked out by hand beside it.

Prices are USD per million tokens; money is integer nano-dollars (USD x 10^9).
A token at $X per million costs X x 1000 nanos.
"""

from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from billing.pricing import cost_nanos, nanos_to_usd, snapshot_from_price, usd_to_nanos, worst_case_cost_nanos
from gateway.kernel.context import PriceSnapshot, Rates, Usage
from proxy.providers.anthropic import usage_from_anthropic
from proxy.providers.openai import OpenAIAdapter, OpenAIStreamObserver, usage_from_openai

PRICE_FIELDS = {
    "input_usd_per_mtok": None,
    "output_usd_per_mtok": None,
    "cached_input_usd_per_mtok": None,
    "cache_write_5m_usd_per_mtok": None,
    "cache_write_1h_usd_per_mtok": None,
    "reasoning_usd_per_mtok": None,
    "audio_input_usd_per_mtok": None,
    "audio_output_usd_per_mtok": None,
    "image_input_usd_per_mtok": None,
    "image_output_usd_per_mtok": None,
    "input_usd_per_second": None,
    "input_usd_per_character": None,
    "output_usd_per_image": None,
    "long_context_threshold": None,
    "long_input_usd_per_mtok": None,
    "long_cached_input_usd_per_mtok": None,
    "long_cache_write_5m_usd_per_mtok": None,
    "long_cache_write_1h_usd_per_mtok": None,
    "long_output_usd_per_mtok": None,
    "request_fee_usd": Decimal(0),
    "max_output_tokens": None,
    "pk": 7,
}


def price(**rates: Any) -> PriceSnapshot:
    """A snapshot from a Price-like row; rates given as strings of USD per million."""
    values = {k: Decimal(v) if isinstance(v, str) else v for k, v in rates.items()}
    return snapshot_from_price(SimpleNamespace(**{**PRICE_FIELDS, **values}))


GPT_4O = price(input_usd_per_mtok="2.50", cached_input_usd_per_mtok="1.25", output_usd_per_mtok="10")
SONNET = price(
    input_usd_per_mtok="3",
    cached_input_usd_per_mtok="0.30",
    cache_write_5m_usd_per_mtok="3.75",
    cache_write_1h_usd_per_mtok="6",
    output_usd_per_mtok="15",
    long_context_threshold=200_000,
    long_input_usd_per_mtok="6",
    long_cached_input_usd_per_mtok="0.60",
    long_cache_write_5m_usd_per_mtok="7.50",
    long_cache_write_1h_usd_per_mtok="12",
    long_output_usd_per_mtok="22.50",
)


def test_openai_counts_cached_tokens_inside_prompt_tokens_and_they_are_billed_once() -> None:
    usage = usage_from_openai(
        {
            "prompt_tokens": 1000,
            "completion_tokens": 500,
            "prompt_tokens_details": {"cached_tokens": 400},
            "completion_tokens_details": {"reasoning_tokens": 200},
        }
    )
    assert usage == Usage(input_tokens=600, cached_input_tokens=400, output_tokens=300, reasoning_tokens=200)
    # 600 x $2.50/M = 1_500_000; 400 x $1.25/M = 500_000; (300 + 200) x $10/M = 5_000_000
    assert cost_nanos(usage, GPT_4O) == 7_000_000


def test_anthropic_counts_cache_reads_and_writes_outside_input_tokens() -> None:
    usage = usage_from_anthropic(
        {
            "input_tokens": 100,
            "cache_read_input_tokens": 2000,
            "cache_creation_input_tokens": 1500,
            "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 500},
            "output_tokens": 300,
        }
    )
    assert usage == Usage(
        input_tokens=100,
        cached_input_tokens=2000,
        cache_write_5m_tokens=1000,
        cache_write_1h_tokens=500,
        output_tokens=300,
    )
    assert usage.prompt_tokens == 3600
    # 100 x $3 = 300_000; 2000 x $0.30 = 600_000; 1000 x $3.75 = 3_750_000; 500 x $6 = 3_000_000;
    # 300 x $15 = 4_500_000 -> 12_150_000 nanos
    assert cost_nanos(usage, SONNET) == 12_150_000


def test_an_anthropic_cache_write_without_a_breakdown_is_a_five_minute_write() -> None:
    usage = usage_from_anthropic({"input_tokens": 10, "cache_creation_input_tokens": 40, "output_tokens": 1})
    assert (usage.cache_write_5m_tokens, usage.cache_write_1h_tokens) == (40, 0)
    # 10 x $3 = 30_000; 40 x $3.75 = 150_000; 1 x $15 = 15_000
    assert cost_nanos(usage, SONNET) == 195_000


def test_reasoning_tokens_have_their_own_rate_when_the_price_sets_one() -> None:
    o_series = price(input_usd_per_mtok="1.10", output_usd_per_mtok="4.40", reasoning_usd_per_mtok="8")
    # 1000 x $1.10 = 1_100_000; 100 x $4.40 = 440_000; 50 x $8 = 400_000
    assert cost_nanos(Usage(input_tokens=1000, output_tokens=100, reasoning_tokens=50), o_series) == 1_940_000


def test_the_long_context_rates_apply_to_the_whole_request_above_the_threshold() -> None:
    at_threshold = Usage(input_tokens=150_000, cached_input_tokens=50_000, output_tokens=1000)
    above = Usage(input_tokens=150_001, cached_input_tokens=50_000, output_tokens=1000)
    # base: 150_000 x $3 = 450_000_000; 50_000 x $0.30 = 15_000_000; 1000 x $15 = 15_000_000
    assert cost_nanos(at_threshold, SONNET) == 480_000_000
    # long: 150_001 x $6 = 900_006_000; 50_000 x $0.60 = 30_000_000; 1000 x $22.50 = 22_500_000
    assert cost_nanos(above, SONNET) == 952_506_000


def test_a_fixed_fee_is_added_once_per_request() -> None:
    search = price(input_usd_per_mtok="1", output_usd_per_mtok="1", request_fee_usd="0.005")
    # 1000 x $1 = 1_000_000 + $0.005 = 5_000_000
    assert cost_nanos(Usage(input_tokens=1000), search) == 6_000_000
    assert cost_nanos(Usage(), search) == 5_000_000


def test_the_total_is_rounded_up_once_never_per_bucket() -> None:
    cheap = price(input_usd_per_mtok="0.0001", output_usd_per_mtok="0.0001")  # 0.1 nano a token
    # 3 + 3 tokens x 0.1 nano = 0.6 nano -> 1 nano (rounding each bucket up would give 2)
    assert cost_nanos(Usage(input_tokens=3, output_tokens=3), cheap) == 1


def test_a_model_without_a_price_costs_nothing() -> None:
    assert cost_nanos(Usage(input_tokens=10**6, output_tokens=10**6), None) == 0


def test_empty_rates_fall_back_to_the_rate_they_refine() -> None:
    plain = price(input_usd_per_mtok="2", output_usd_per_mtok="8")
    assert plain.base == Rates(
        input=2_000_000_000,
        cached_input=2_000_000_000,
        cache_write_5m=2_000_000_000,
        cache_write_1h=2_000_000_000,
        output=8_000_000_000,
        reasoning=8_000_000_000,
    )
    write_5m_only = price(input_usd_per_mtok="2", output_usd_per_mtok="8", cache_write_5m_usd_per_mtok="2.5")
    assert write_5m_only.base.cache_write_1h == 2_500_000_000
    partial_long = price(
        input_usd_per_mtok="2", output_usd_per_mtok="8", long_context_threshold=10, long_input_usd_per_mtok="4"
    )
    assert partial_long.long is not None
    assert (partial_long.long.input, partial_long.long.output) == (4_000_000_000, 8_000_000_000)


def test_a_zero_rate_is_a_price_of_zero_not_a_missing_price() -> None:
    free_cache = price(input_usd_per_mtok="1", output_usd_per_mtok="2", cached_input_usd_per_mtok="0")
    # 1 input token x $1 = 1_000; 1000 cached tokens x $0 = 0
    assert cost_nanos(Usage(input_tokens=1, cached_input_tokens=1000), free_cache) == 1_000


def test_the_snapshot_keeps_the_price_row_it_came_from() -> None:
    assert GPT_4O.price_id == 7


@pytest.mark.parametrize("usd", ["0.0000000001", "1.0000000005"])
def test_a_price_finer_than_one_nano_dollar_is_refused(usd: str) -> None:
    with pytest.raises(ValueError, match="finer than one nano-dollar"):
        price(input_usd_per_mtok=usd, output_usd_per_mtok="1")


def test_nanos_and_usd_convert_exactly_both_ways() -> None:
    assert usd_to_nanos(Decimal("123.456789123")) == 123_456_789_123
    assert nanos_to_usd(13_800) == Decimal("0.0000138")


def stream_usage(usage: dict[str, Any]) -> Usage | None:
    observer = OpenAIStreamObserver(client_wants_usage=False)
    for chunk in ({"choices": [{"delta": {"content": "hi"}}]}, {"choices": [], "usage": usage}):
        observer.observe(orjson.dumps(chunk))
    return observer.usage


def test_a_streamed_and_a_non_streamed_answer_with_the_same_usage_cost_the_same() -> None:
    reported = {"prompt_tokens": 1234, "completion_tokens": 567, "prompt_tokens_details": {"cached_tokens": 1000}}
    json_usage = OpenAIAdapter().usage_from_response({"usage": reported})
    assert stream_usage(reported) == json_usage
    # 234 x $2.50 = 585_000; 1000 x $1.25 = 1_250_000; 567 x $10 = 5_670_000
    assert cost_nanos(json_usage, GPT_4O) == 7_505_000


def test_the_worst_case_uses_the_dearest_prompt_and_output_rates_of_its_tier() -> None:
    # 1000 prompt tokens at the 1-hour write rate $6 = 6_000_000; 100 output x $15 = 1_500_000
    assert worst_case_cost_nanos(SONNET, prompt_tokens=1000, output_tokens=100) == 7_500_000
    # above 200k the long tier: 200_001 x $12 = 2_400_012_000; 100 x $22.50 = 2_250_000
    assert worst_case_cost_nanos(SONNET, prompt_tokens=200_001, output_tokens=100) == 2_402_262_000
    assert worst_case_cost_nanos(None, prompt_tokens=10**6, output_tokens=10**6) == 0


def test_the_worst_case_is_never_below_the_real_cost_of_the_same_counts() -> None:
    usage = Usage(
        input_tokens=10, cached_input_tokens=20, cache_write_5m_tokens=30, cache_write_1h_tokens=40, output_tokens=50
    )
    worst = worst_case_cost_nanos(SONNET, prompt_tokens=usage.prompt_tokens, output_tokens=usage.output_tokens)
    assert worst >= cost_nanos(usage, SONNET)


def test_the_request_fee_is_charged_only_when_the_provider_answered() -> None:
    fee = price(input_usd_per_mtok="1", output_usd_per_mtok="1", request_fee_usd="0.01")
    assert cost_nanos(Usage(), fee, answered=False) == 0
    assert cost_nanos(Usage(), fee) == 10_000_000


def test_realtime_audio_has_its_own_rates_and_falls_back_to_text_without_them() -> None:
    # gpt-realtime: text $4 in / $16 out, audio $32 in / $64 out, cached $0.40.
    realtime = price(
        input_usd_per_mtok="4",
        output_usd_per_mtok="16",
        cached_input_usd_per_mtok="0.4",
        audio_input_usd_per_mtok="32",
        audio_output_usd_per_mtok="64",
    )
    usage = Usage(
        input_tokens=20, cached_input_tokens=16, audio_input_tokens=14, output_tokens=12, audio_output_tokens=40
    )
    # 20 x 4000 + 16 x 400 + 14 x 32000 + 12 x 16000 + 40 x 64000 nanos
    assert cost_nanos(usage, realtime) == 80_000 + 6_400 + 448_000 + 192_000 + 2_560_000
    text_only = price(input_usd_per_mtok="4", output_usd_per_mtok="16")
    assert cost_nanos(Usage(audio_input_tokens=10, audio_output_tokens=10), text_only) == 40_000 + 160_000
    # The worst case takes the dearest prompt rate (audio in) and output rate (audio out).
    assert worst_case_cost_nanos(realtime, prompt_tokens=10, output_tokens=10) == 320_000 + 640_000
