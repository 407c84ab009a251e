"""The media endpoints' cost arithmetic. Pure: no ORM, no floats.

Audio input is priced per second, speech input per character and images per
image, in LiteLLM's fields (input_cost_per_second, input_cost_per_character,
output_cost_per_image). A request that also reports tokens (gpt-4o-transcribe,
gpt-image-1) adds its token buckets at the token rates, so one price can
carry both and the cost is still the sum over the buckets.

LiteLLM prices an image's size and quality as rows of their own, named
"hd/1024-x-1024/dall-e-3" or "1024-x-1024/dall-e-2" (some files write the
quality after the size); the catalog files those under the model's price
(`with_image_variants`), and `image_price` picks one for a request.
"""

import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from decimal import Decimal

from gateway.kernel.context import MediaRates, PriceSnapshot, Rates, Usage

NANOS_PER_USD = 10**9
SCALE = 10**6  # costs are summed in nano-dollars x 10^6 (pricing.TOKENS_PER_MTOK), then rounded up once
MS_PER_SECOND = 1000

# The most each media rate may say, as price_amount_check enforces: far
# above any list price (whisper-1 is $0.0001 a second, tts-1-hd $0.00003 a
# character, an hd dall-e-3 image $0.12), far below what a slipped unit reaches.
MEDIA_RATE_CAPS = {
    "input_usd_per_second": (Decimal(10), "USD per second of audio"),
    "input_usd_per_character": (Decimal(1), "USD per character"),
    "output_usd_per_image": (Decimal(100), "USD per image"),
}

# "hd/1024-x-1024/dall-e-3", "1024-x-1024/dall-e-2", "1024-x-1024/hd/dall-e-3".
_VARIANT = re.compile(r"^(?:(?P<before>[a-z]+)/)?(?P<w>\d+)-x-(?P<h>\d+)/(?:(?P<after>[a-z]+)/)?(?P<model>[^/].*)$")
OPEN = "auto"  # a size or quality the model chooses


def variant_name(name: str) -> tuple[str, str] | None:
    """(model, "quality/WxH" or "WxH") for a size/quality-named price row, else None."""
    match = _VARIANT.match(name)
    if match is None or (match["before"] and match["after"]):
        return None
    quality = match["before"] or match["after"]
    size = f"{int(match['w'])}x{int(match['h'])}"
    return match["model"], f"{quality}/{size}" if quality else size


def pixels_in(name: str) -> int | None:
    """The pixels of one image at the size a variant's name says (LiteLLM
    prices dall-e's sizes per pixel)."""
    match = _VARIANT.match(name)
    return None if match is None else int(match["w"]) * int(match["h"])


def with_image_variants(prices: dict[tuple[str, str], PriceSnapshot]) -> dict[tuple[str, str], PriceSnapshot]:
    """The prices with each size/quality row filed under its model's price
    (keyed (provider, model)); a model priced only by its variants gets an
    empty base price to hold them."""
    variants: dict[tuple[str, str], list[tuple[str, PriceSnapshot]]] = {}
    for (provider, name), price in prices.items():
        found = variant_name(name)
        if found is not None and price.media.per_image is not None:
            variants.setdefault((provider, found[0]), []).append((found[1], price))
    merged = dict(prices)
    empty = PriceSnapshot(base=Rates(0, 0, 0, 0, 0, 0))
    # Rows for any provider also serve a provider's own price of the model,
    # and a provider's own rows sit on the model's price for any provider.
    for (provider, model), found in list(variants.items()):
        if provider == "":
            for key in [k for k in merged if k[1] == model and k[0] != ""]:
                variants[key] = list({**dict(found), **dict(variants.get(key, []))}.items())  # its own win
    for key, found in variants.items():
        base = merged.get(key) or merged.get(("", key[1])) or empty
        merged[key] = replace(base, image_variants=tuple(sorted(found, key=lambda v: v[0])))
    return merged


def image_price(price: PriceSnapshot | None, size: str | None, quality: str | None) -> PriceSnapshot | None:
    """The price of one image of `size` ("1024x1024") and `quality` ("hd").

    A size or quality left out takes OpenAI's default when the model has a
    price for it (1024x1024, "standard"); one left to the model ("auto", or
    a left-out one without such a price) takes the dearest that matches, so
    that a reservation is never short and a bill never under. None: the
    model has no per-image price."""
    if price is None:
        return None
    variants = dict(price.image_variants)
    if not variants:
        return price if price.media.per_image is not None else None
    size = _defaulted(size, "1024x1024", (k.rsplit("/", 1)[-1] for k in variants))
    quality = _defaulted(quality, "standard", (k.split("/")[0] for k in variants if "/" in k))
    matching = [
        p
        for key, p in variants.items()
        if (size == OPEN or key.rsplit("/", 1)[-1] == size)
        and (quality == OPEN or "/" not in key or key.split("/")[0] == quality)
    ]
    exact = [p for key, p in variants.items() if key in (f"{quality}/{size}", size)]
    chosen = exact or matching
    if not chosen:
        return price if price.media.per_image is not None else None
    return max(chosen, key=lambda p: p.media.per_image or 0)


def _defaulted(value: str | None, default: str, known: Iterable[str]) -> str:
    if value is None or value == "":
        return default if default in set(known) else OPEN
    return value.lower()


def media_cost_scaled(usage: Usage, media: MediaRates) -> int:
    """The media buckets' cost in nano-dollars x SCALE (rounded by the caller)."""
    total = 0
    if media.per_second is not None:
        total += usage.audio_input_ms * media.per_second * (SCALE // MS_PER_SECOND)
    if media.per_character is not None:
        total += usage.input_characters * media.per_character * SCALE
    if media.per_image is not None:
        total += usage.output_images * media.per_image * SCALE
    return total


def media_rates(fields: Mapping[str, Decimal | None]) -> MediaRates:
    """MediaRates from a price row's USD fields (None stays None)."""

    def nanos(name: str) -> int | None:
        value = fields.get(name)
        if value is None:
            return None
        scaled = value * NANOS_PER_USD
        if scaled != scaled.to_integral_value():
            raise ValueError(f"{value:f} USD is finer than one nano-dollar")
        return int(scaled)

    return MediaRates(
        per_second=nanos("input_usd_per_second"),
        per_character=nanos("input_usd_per_character"),
        per_image=nanos("output_usd_per_image"),
    )
