"""LiteLLM's public pricing file, read and converted to prices (billing.sync applies them).

The file (`model_prices_and_context_window.json`) is one JSON object keyed
by model name, with rates in USD per token; a Price row holds USD per
million tokens. Every entry is converted if it can be, and the others are
skipped with the reason. Nothing here writes.
"""

import json
import re
import urllib.request
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

from billing.media_pricing import pixels_in
from billing.models import Price

FETCH_TIMEOUT_SECONDS = 30
# The real file is a few MB; anything this big is not it, and would be read into memory.
MAX_FILE_BYTES = 64 * 1024 * 1024
PER_MILLION = Decimal(1_000_000)
NANO = Decimal("0.000000001")  # the Price fields' nine decimal places
# Above this (USD per million tokens) a rate is taken for a typo or a unit mix-up
# (LiteLLM is per token; a per-million figure pasted in is a million times too dear).
ABSURD_USD_PER_MTOK = Decimal(10_000)
# PositiveIntegerField's ceiling on PostgreSQL; SQLite would store more, silently.
MAX_INT_FIELD = 2**31 - 1
MODEL_NAME_MAX = Price._meta.get_field("model").max_length

SAMPLE_SPEC = "sample_spec"  # the file's documentation of its own fields, not a model
TOKEN_PRICED_MODES = {"chat", "completion", "embedding", "responses"}
# Priced per second of audio, per character or per image (billing.media_pricing),
# and by tokens where the provider reports them: the token rates may be absent.
MEDIA_MODES = {"audio_transcription", "audio_speech", "image_generation", "image_edit"}
# LiteLLM key (USD per unit) -> Price field (USD per unit), for the media modes.
MEDIA_RATES = {
    "input_cost_per_second": "input_usd_per_second",
    "input_cost_per_character": "input_usd_per_character",
    # LiteLLM's OpenAI image rows say input_cost_per_image for the image
    # made; other providers' say output_cost_per_image (preferred below).
    "input_cost_per_image": "output_usd_per_image",
    "output_cost_per_image": "output_usd_per_image",
}
# Per token, like BASE_RATES: gpt-image-1's image tokens.
IMAGE_TOKEN_RATES = {
    "input_cost_per_image_token": "image_input_usd_per_mtok",
    "output_cost_per_image_token": "image_output_usd_per_mtok",
}

# LiteLLM key (USD per token) -> Price field (USD per million tokens).
BASE_RATES = {
    "input_cost_per_token": "input_usd_per_mtok",
    "output_cost_per_token": "output_usd_per_mtok",
    "cache_read_input_token_cost": "cached_input_usd_per_mtok",
    "cache_creation_input_token_cost": "cache_write_5m_usd_per_mtok",
    "cache_creation_input_token_cost_above_1hr": "cache_write_1h_usd_per_mtok",
    "output_cost_per_reasoning_token": "reasoning_usd_per_mtok",
    "input_cost_per_audio_token": "audio_input_usd_per_mtok",
    "output_cost_per_audio_token": "audio_output_usd_per_mtok",
}
# The Price fields price_set takes as named arguments rather than in **optional.
PRICE_SET_ARGUMENTS = {"input_usd_per_mtok", "output_usd_per_mtok", "cached_input_usd_per_mtok"}
# The same rates above the long-context threshold, keyed "<rate>_above_<N>k_tokens".
LONG_RATES = {
    "input_cost_per_token": "long_input_usd_per_mtok",
    "output_cost_per_token": "long_output_usd_per_mtok",
    "cache_read_input_token_cost": "long_cached_input_usd_per_mtok",
    "cache_creation_input_token_cost": "long_cache_write_5m_usd_per_mtok",
    "cache_creation_input_token_cost_above_1hr": "long_cache_write_1h_usd_per_mtok",
}
# `$` keeps out service tiers such as "..._above_272k_tokens_priority"; the greedy
# rate group keeps "cache_creation_input_token_cost_above_1hr" whole.
LONG_KEY = re.compile(r"^(?P<rate>.+)_above_(?P<thousands>\d+)k_tokens$")


class PriceSyncError(Exception):
    """The run failed as a whole (unreadable or malformed file): nothing was changed."""


class EntrySkipped(Exception):
    """One entry cannot be synced; the message is the reason reported for it."""


@dataclass(frozen=True)
class SyncedPrice:
    """One entry, converted to price_set's arguments."""

    model: str
    input_usd: Decimal
    output_usd: Decimal
    cached_input_usd: Decimal | None
    optional: dict[str, Decimal | int]


def source_read(source: str) -> str:
    """The file's text, from an http(s) URL, a file:// URL or a path."""
    scheme = urlsplit(source).scheme.lower()
    try:
        if scheme in ("http", "https"):
            with urllib.request.urlopen(source, timeout=FETCH_TIMEOUT_SECONDS) as response:
                data = response.read(MAX_FILE_BYTES + 1)
        elif scheme == "file":
            data = _file_read(Path(url2pathname(urlsplit(source).path)))
        elif len(scheme) > 1:  # one letter is a Windows drive, as in C:\prices.json
            raise PriceSyncError(f"cannot read {source}: use an http(s) or file:// URL, or a path")
        else:
            data = _file_read(Path(source))
    except OSError as exc:  # urllib's URLError and HTTPError included
        raise PriceSyncError(f"cannot read {source}: {exc}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise PriceSyncError(f"{source} is larger than {MAX_FILE_BYTES} bytes: not the LiteLLM pricing file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PriceSyncError(f"{source} is not UTF-8 text: {exc}") from exc


def _file_read(path: Path) -> bytes:
    with path.open("rb") as file:
        return file.read(MAX_FILE_BYTES + 1)


def prices_parse(text: str) -> dict[str, Any]:
    """The file as a dict of entries. Numbers with a point become Decimal, so
    no rate ever passes through a float; NaN and Infinity become Decimal too,
    and are refused per entry."""
    try:
        document = json.loads(text, parse_float=Decimal, parse_constant=Decimal)
    except (ValueError, RecursionError) as exc:
        raise PriceSyncError(f"the pricing file is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise PriceSyncError(f"the pricing file must be a JSON object of models, not a {type(document).__name__}")
    return document


def prices_convert(document: dict[str, Any], skipped: dict[str, str]) -> list[SyncedPrice]:
    """Every entry that converts; the others go into `skipped` with their reason."""
    prices = []
    for model, entry in document.items():
        if model == SAMPLE_SPEC:
            continue
        try:
            prices.append(entry_convert(model, entry))
        except EntrySkipped as skip:
            skipped[model] = str(skip)
    return prices


def entry_convert(model: str, entry: Any) -> SyncedPrice:
    """One LiteLLM entry as a price; raises EntrySkipped with the reason."""
    if not isinstance(entry, dict):
        raise EntrySkipped("entry is not an object")
    if len(model) > MODEL_NAME_MAX:
        raise EntrySkipped(f"model name is longer than {MODEL_NAME_MAX} characters")
    mode = entry.get("mode")
    media = isinstance(mode, str) and mode in MEDIA_MODES
    if mode is not None and not media and (not isinstance(mode, str) or mode not in TOKEN_PRICED_MODES):
        raise EntrySkipped(f"mode {mode} is not token-priced")
    media_rates = media_entry_rates(model, entry) if media else {}
    if media and not media_rates and entry.get("input_cost_per_token") is None:
        if entry.get("input_cost_per_pixel") is not None:
            raise EntrySkipped("priced per pixel with no size in its name: set its price per image by hand")
        raise EntrySkipped(f"mode {mode} has no rate the gateway meters (per second, character, image or token)")
    for required in ("input_cost_per_token", "output_cost_per_token"):
        if entry.get(required) is None and not media_rates:
            raise EntrySkipped(f"missing {required}")
    rates = {name: usd_per_mtok(key, entry[key]) for key, name in BASE_RATES.items() if entry.get(key) is not None}
    rates.setdefault("input_usd_per_mtok", Decimal(0))  # a media price without token rates: tokens are free
    rates.setdefault("output_usd_per_mtok", Decimal(0))
    optional: dict[str, Decimal | int] = {name: rate for name, rate in rates.items() if name not in PRICE_SET_ARGUMENTS}
    optional.update(media_rates)
    optional.update(long_context_rates(entry))
    if entry.get("max_output_tokens") is not None:
        optional["max_output_tokens"] = max_output_tokens(entry["max_output_tokens"])
    return SyncedPrice(
        model=model,
        input_usd=rates["input_usd_per_mtok"],
        output_usd=rates["output_usd_per_mtok"],
        cached_input_usd=rates.get("cached_input_usd_per_mtok"),
        optional=optional,
    )


def usd_per_mtok(key: str, value: Any) -> Decimal:
    """A per-token rate from the file as USD per million tokens, to the nano."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise EntrySkipped(f"{key} is not a number: {shown(value)}")
    if not Decimal(value).is_finite():
        raise EntrySkipped(f"{key} is not a finite number: {shown(value)}")
    usd = Decimal(value) * PER_MILLION
    if usd < 0:
        raise EntrySkipped(f"{key} is negative: {shown(value)}")
    if usd > ABSURD_USD_PER_MTOK:
        limit = f"more than ${ABSURD_USD_PER_MTOK}"
        raise EntrySkipped(f"{key} is absurd: ${usd.normalize():f} per million tokens ({limit})")
    # The Price fields keep nine decimal places (a nano-dollar). LiteLLM's
    # per-token figures (3.75e-06) are exact after the x10^6, since Decimal
    # keeps them as written; only a pathological value (1.0000000005e-06) has
    # more places, and it is rounded rather than refused: a sub-nano
    # difference per million tokens is no reason to leave a model unpriced.
    return usd.quantize(NANO, rounding=ROUND_HALF_UP)


def media_entry_rates(model: str, entry: dict[str, Any]) -> dict[str, Decimal | int]:
    """A media entry's per-second, per-character and per-image rates, and
    its image token rates. A size-named image row priced per pixel
    ("hd/1024-x-1024/dall-e-3": input_cost_per_pixel) becomes that size's
    price per image, to the nano."""
    rates: dict[str, Decimal | int] = {
        name: usd_per_unit(key, entry[key]) for key, name in MEDIA_RATES.items() if entry.get(key) is not None
    }
    if entry.get("output_cost_per_image") is not None:  # when both are given, the image made's price
        rates["output_usd_per_image"] = usd_per_unit("output_cost_per_image", entry["output_cost_per_image"])
    pixels = pixels_in(model)
    if "output_usd_per_image" not in rates and pixels is not None and entry.get("input_cost_per_pixel") is not None:
        per_pixel = usd_per_unit("input_cost_per_pixel", entry["input_cost_per_pixel"], quantize=False)
        per_pixel += usd_per_unit("output_cost_per_pixel", entry.get("output_cost_per_pixel") or 0, quantize=False)
        rates["output_usd_per_image"] = (per_pixel * pixels).quantize(NANO, rounding=ROUND_HALF_UP)
    rates.update(
        {name: usd_per_mtok(key, entry[key]) for key, name in IMAGE_TOKEN_RATES.items() if entry.get(key) is not None}
    )
    return rates


def usd_per_unit(key: str, value: Any, *, quantize: bool = True) -> Decimal:
    """A media rate from the file (USD per second, character, image or
    pixel), to the nano unless `quantize` is False."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal) or not Decimal(value).is_finite():
        raise EntrySkipped(f"{key} is not a finite number: {shown(value)}")
    usd = Decimal(value)
    if usd < 0:
        raise EntrySkipped(f"{key} is negative: {shown(value)}")
    return usd.quantize(NANO, rounding=ROUND_HALF_UP) if quantize else usd


def long_context_rates(entry: dict[str, Any]) -> dict[str, Decimal | int]:
    """The long-context tier: its threshold (from the key names) and rates."""
    rates: dict[str, Decimal | int] = {}
    thresholds: set[int] = set()
    for key, value in entry.items():
        match = LONG_KEY.match(key)
        if match is None or match["rate"] not in LONG_RATES or value is None:
            continue
        thresholds.add(int(match["thousands"]))
        rates[LONG_RATES[match["rate"]]] = usd_per_mtok(key, value)
    if not thresholds:
        return {}
    if len(thresholds) > 1:
        # A Price row has one tier; picking one would mis-bill prompts past the other.
        listed = ", ".join(f"{t}k" for t in sorted(thresholds))
        raise EntrySkipped(f"several long-context thresholds ({listed}): set this price by hand")
    threshold = thresholds.pop() * 1000
    if not 0 < threshold <= MAX_INT_FIELD:
        raise EntrySkipped(f"long-context threshold out of range: {threshold}")
    return {"long_context_threshold": threshold, **rates}


def max_output_tokens(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise EntrySkipped(f"max_output_tokens is not an integer: {shown(value)}")
    if not 0 < value <= MAX_INT_FIELD:
        raise EntrySkipped(f"max_output_tokens out of range: {value}")
    return value


def shown(value: Any) -> str:
    """A value as the file spells it, for a skip reason."""
    return str(value) if isinstance(value, Decimal) else json.dumps(value)
