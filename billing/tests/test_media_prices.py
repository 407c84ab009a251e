"""Media prices: LiteLLM's per-second, per-character and per-image fields, from the price
file, price_set, gateway_apply and the cost arithmetic, exact to the nano-dollar."""

import json
from decimal import Decimal
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from billing.media_pricing import image_price, variant_name, with_image_variants
from billing.models import Price
from billing.pricing import cost_nanos, price_amount_check, worst_case_cost_nanos
from billing.sync import prices_sync
from gateway.kernel.context import MediaRates, PriceSnapshot, Rates, Usage
from proxy.media import MediaCall, MediaKind, wav_duration_ms, worst_case_nanos

# Entries as LiteLLM's model_prices_and_context_window.json has them.
LITELLM_MEDIA = {
    "whisper-1": {
        "input_cost_per_second": 0.0001,
        "litellm_provider": "openai",
        "mode": "audio_transcription",
        "output_cost_per_second": 0.0001,
    },
    "tts-1-hd": {"input_cost_per_character": 3e-05, "litellm_provider": "openai", "mode": "audio_speech"},
    "hd/1024-x-1024/dall-e-3": {
        "input_cost_per_pixel": 7.629e-08,
        "litellm_provider": "openai",
        "mode": "image_generation",
        "output_cost_per_pixel": 0.0,
    },
    "low/1024-x-1024/gpt-image-1": {
        "input_cost_per_image": 0.011,
        "input_cost_per_pixel": 1.0490417e-08,
        "litellm_provider": "openai",
        "mode": "image_generation",
        "output_cost_per_pixel": 0.0,
    },
    "1024-x-1024/50-steps/bedrock/amazon.nova-canvas-v1:0": {
        "litellm_provider": "bedrock",
        "mode": "image_generation",
        "output_cost_per_image": 0.06,
    },
    "gpt-image-1": {
        "cache_read_input_token_cost": 1.25e-06,
        "input_cost_per_image_token": 1e-05,
        "input_cost_per_token": 5e-06,
        "litellm_provider": "openai",
        "mode": "image_generation",
        "output_cost_per_image_token": 4e-05,
    },
    "gpt-4o-transcribe": {
        "input_cost_per_audio_token": 6e-06,
        "input_cost_per_token": 2.5e-06,
        "litellm_provider": "openai",
        "mode": "audio_transcription",
        "output_cost_per_token": 1e-05,
    },
    "moderation-free": {"litellm_provider": "openai", "mode": "audio_speech"},
}


def snapshot(
    per_second: int | None = None,
    per_character: int | None = None,
    per_image: int | None = None,
    **rates: int,
) -> PriceSnapshot:
    base = {"input": 0, "cached_input": 0, "cache_write_5m": 0, "cache_write_1h": 0, "output": 0, "reasoning": 0}
    return PriceSnapshot(base=Rates(**{**base, **rates}), media=MediaRates(per_second, per_character, per_image))


def run(*args: str) -> str:
    out = StringIO()
    call_command("price_set", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


# --- the price file ------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_nightly_sync_imports_the_audio_and_image_rates_by_their_litellm_names(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(LITELLM_MEDIA))

    result = prices_sync(str(path))

    assert result.skipped == {
        "moderation-free": "mode audio_speech has no rate the gateway meters (per second, character, image or token)"
    }
    whisper = Price.objects.get(model="whisper-1")
    assert (whisper.input_usd_per_second, whisper.input_usd_per_mtok, whisper.output_usd_per_mtok) == (
        Decimal("0.0001"),
        0,
        0,
    )
    assert Price.objects.get(model="tts-1-hd").input_usd_per_character == Decimal("0.00003")
    # Per pixel x 1024 x 1024, to the nano: $0.07999... an hd image.
    assert Price.objects.get(model="hd/1024-x-1024/dall-e-3").output_usd_per_image == Decimal("0.079995863")
    assert Price.objects.get(model="low/1024-x-1024/gpt-image-1").output_usd_per_image == Decimal("0.011")
    nova = Price.objects.get(model="1024-x-1024/50-steps/bedrock/amazon.nova-canvas-v1:0")
    assert nova.output_usd_per_image == Decimal("0.06")
    image = Price.objects.get(model="gpt-image-1")
    assert (image.input_usd_per_mtok, image.image_input_usd_per_mtok, image.image_output_usd_per_mtok) == (
        Decimal(5),
        Decimal(10),
        Decimal(40),
    )
    transcribe = Price.objects.get(model="gpt-4o-transcribe")
    assert (transcribe.audio_input_usd_per_mtok, transcribe.output_usd_per_mtok) == (Decimal(6), Decimal(10))


@pytest.mark.django_db
def test_price_set_takes_the_media_rates_by_litellms_names_and_needs_no_token_rates() -> None:
    assert run("whisper-cmd", "--input-cost-per-second", "0.0001") == "set price of whisper-cmd\n"
    run("tts-cmd", "--input-cost-per-character", "0.000015")
    run("hd/1024-x-1024/dalle-cmd", "--output-cost-per-image", "0.08")
    run("image-cmd", "--input", "5", "--output", "10", "--image-input", "10", "--image-output", "40")

    assert Price.objects.get(model="whisper-cmd").input_usd_per_second == Decimal("0.0001")
    assert Price.objects.get(model="tts-cmd").input_usd_per_character == Decimal("0.000015")
    assert Price.objects.get(model="hd/1024-x-1024/dalle-cmd").output_usd_per_image == Decimal("0.08")
    assert Price.objects.get(model="image-cmd").image_output_usd_per_mtok == Decimal(40)
    with pytest.raises(CommandError, match="--input and --output are required"):
        run("tokens-cmd", "--input", "1")


@pytest.mark.django_db
def test_a_media_rate_past_its_cap_or_finer_than_a_nano_is_refused_with_its_unit() -> None:
    with pytest.raises(CommandError, match=r"1000 USD per image is above the 100 this gateway accepts"):
        run("dear-cmd", "--output-cost-per-image", "1000")
    with pytest.raises(CommandError, match="finer than one nano-dollar"):
        run("fine-cmd", "--input-cost-per-second", "0.0000000001")
    with pytest.raises(ValueError, match="USD per character"):
        price_amount_check("input_usd_per_character", Decimal(2))
    assert not Price.objects.filter(model__endswith="-cmd").exists()


@pytest.mark.django_db
def test_gateway_apply_sets_media_prices_without_token_rates(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "prices:\n"
        "  - {model: whisper-apply, input_cost_per_second: '0.0001'}\n"
        "  - {model: standard/1024-x-1024/dalle-apply, output_cost_per_image: '0.04'}\n"
    )
    call_command("gateway_apply", str(path), stdout=StringIO())

    assert Price.objects.get(model="whisper-apply").input_usd_per_second == Decimal("0.0001")
    assert Price.objects.get(model="standard/1024-x-1024/dalle-apply").output_usd_per_image == Decimal("0.04")


# --- the arithmetic --------------------------------------------------------------------------


def test_audio_is_billed_per_millisecond_at_the_per_second_rate_rounded_up_once() -> None:
    whisper = snapshot(per_second=100_000)  # $0.0001 a second
    assert cost_nanos(Usage(audio_input_ms=8470), whisper) == 847_000
    assert cost_nanos(Usage(audio_input_ms=1), whisper) == 100  # 0.1 of a nano per ms, times 1000
    odd = snapshot(per_second=283_333)  # gpt-realtime-whisper's $0.000283333
    assert cost_nanos(Usage(audio_input_ms=1), odd) == 284  # 283.333 rounded up


def test_speech_and_images_are_billed_per_character_and_image_plus_any_tokens() -> None:
    assert cost_nanos(Usage(input_characters=23), snapshot(per_character=15_000)) == 345_000
    both = snapshot(per_image=40_000_000, input=5_000_000_000)
    assert cost_nanos(Usage(output_images=2, input_tokens=10), both) == 80_000_000 + 50_000


def test_image_tokens_are_priced_at_their_own_rates_and_fall_back_to_text_rates() -> None:
    own = snapshot(input=5_000_000_000, output=10_000_000_000, image_input=10_000_000_000, image_output=40_000_000_000)
    usage = Usage(input_tokens=50, image_input_tokens=300, image_output_tokens=4160)
    assert cost_nanos(usage, own) == 50 * 5_000 + 300 * 10_000 + 4160 * 40_000
    text_only = snapshot(input=5_000_000_000, output=10_000_000_000)
    assert cost_nanos(usage, text_only) == 350 * 5_000 + 4160 * 10_000
    assert worst_case_cost_nanos(own, prompt_tokens=1, output_tokens=1) == 10_000 + 40_000


def test_size_and_quality_rows_are_filed_under_their_model_and_picked_per_request() -> None:
    assert variant_name("hd/1024-x-1024/dall-e-3") == ("dall-e-3", "hd/1024x1024")
    assert variant_name("1024-x-1024/hd/dall-e-3") == ("dall-e-3", "hd/1024x1024")
    assert variant_name("256-x-256/dall-e-2") == ("dall-e-2", "256x256")
    assert variant_name("dall-e-3") is None
    prices = with_image_variants(
        {
            ("", "standard/1024-x-1024/dall-e-3"): snapshot(per_image=40_000_000),
            ("", "hd/1024-x-1024/dall-e-3"): snapshot(per_image=80_000_000),
            ("", "hd/1024-x-1792/dall-e-3"): snapshot(per_image=120_000_000),
        }
    )
    dalle = prices[("", "dall-e-3")]  # a model priced only by its sizes gets a base to hold them

    def per_image(size: str | None, quality: str | None) -> int | None:
        chosen = image_price(dalle, size, quality)
        return None if chosen is None else chosen.media.per_image

    assert per_image("1024x1024", "hd") == 80_000_000
    assert per_image("1024x1024", None) == 40_000_000  # OpenAI's default quality, standard
    assert per_image(None, None) == 40_000_000  # and its default size, 1024x1024
    assert per_image("auto", "hd") == 120_000_000  # left to the model: the dearest that matches
    assert per_image("1024x1792", "auto") == 120_000_000


def test_a_budget_reserves_n_times_the_dearest_image_and_the_longest_the_audio_can_be(
    settings: Any,
) -> None:
    settings.PROXY_AUDIO_MIN_BYTES_PER_SECOND = 1000
    settings.PROXY_AUDIO_MAX_SECONDS = 0
    dalle = with_image_variants(
        {
            ("", "hd/1024-x-1024/d"): snapshot(per_image=80_000_000),
            ("", "hd/1024-x-1792/d"): snapshot(per_image=120_000_000),
        }
    )[("", "d")]
    images = MediaCall(MediaKind.IMAGE, images=3, size="auto", quality="hd")
    assert worst_case_nanos(images, dalle, request_bytes=100, output_tokens=0) == 3 * 120_000_000
    audio = MediaCall(MediaKind.AUDIO_IN, upload_bytes=50_000)  # no header to read: 50 s at 1000 bytes a second
    whisper = snapshot(per_second=100_000)
    assert worst_case_nanos(audio, whisper, request_bytes=50_400, output_tokens=4096) == 50 * 100_000
    settings.PROXY_AUDIO_MAX_SECONDS = 10  # a declared cap
    assert worst_case_nanos(audio, whisper, request_bytes=50_400, output_tokens=4096) == 10 * 100_000
    speech = MediaCall(MediaKind.SPEECH, characters=100)
    assert worst_case_nanos(speech, snapshot(per_character=15_000), request_bytes=150, output_tokens=0) == 1_500_000


def test_a_wav_headers_duration_is_read_and_anything_else_is_unknown() -> None:
    fmt = (
        (1).to_bytes(2, "little") * 2
        + (8000).to_bytes(4, "little")
        + (16000).to_bytes(4, "little")
        + b"\x02\x00\x10\x00"
    )
    data = b"\x00" * 24_000  # 1.5 s at 16,000 bytes a second
    body = b"WAVEfmt " + len(fmt).to_bytes(4, "little") + fmt + b"data" + len(data).to_bytes(4, "little") + data
    assert wav_duration_ms(b"RIFF" + len(body).to_bytes(4, "little") + body) == 1500
    assert wav_duration_ms(b"ID3\x03 an mp3") is None
    assert wav_duration_ms(b"RIFF\x00\x00\x00\x00WAVE") is None


def test_a_providers_own_model_price_keeps_the_sizes_priced_for_any_provider() -> None:
    own = snapshot(per_image=1)
    prices = with_image_variants(
        {
            ("azure", "dall-e-3"): own,
            ("", "hd/1024-x-1024/dall-e-3"): snapshot(per_image=80_000_000),
            ("azure", "standard/1024-x-1024/dall-e-3"): snapshot(per_image=30_000_000),
        }
    )
    assert dict(prices[("azure", "dall-e-3")].image_variants).keys() == {"hd/1024x1024", "standard/1024x1024"}
    assert dict(prices[("", "dall-e-3")].image_variants).keys() == {"hd/1024x1024"}


@pytest.mark.django_db
def test_the_management_api_sets_and_shows_media_prices(admin_client: Any) -> None:
    sent = {
        "model": "hd/1024-x-1024/dalle-api",
        "input_usd_per_mtok": "0",
        "output_usd_per_mtok": "0",
        "output_usd_per_image": "0.08",
    }
    response = admin_client.post("/api/prices", json.dumps(sent), content_type="application/json")
    assert response.status_code == 201, response.content
    assert Decimal(json.loads(response.content)["price"]["output_usd_per_image"]) == Decimal("0.08")
    listed = json.loads(admin_client.get("/api/prices?model=hd/1024-x-1024/dalle-api").content)["items"]
    assert [p["output_usd_per_image"] for p in listed] == ["0.080000000"]
