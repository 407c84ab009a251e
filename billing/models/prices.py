"""Prices: what each model costs, one row per rate change, never edited."""

import datetime as dt
from decimal import Decimal
from typing import Any

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from billing.media_pricing import MEDIA_RATE_CAPS
from billing.pricing import MAX_REQUEST_FEE_USD, MAX_USD_PER_MTOK

# Any: these are spread into DecimalField(**...), whose parameters differ in type.
USD_PER_MTOK: dict[str, Any] = {
    "max_digits": 18,
    "decimal_places": 9,
    "validators": [MinValueValidator(Decimal(0)), MaxValueValidator(MAX_USD_PER_MTOK)],
}
OPTIONAL_USD_PER_MTOK: dict[str, Any] = {**USD_PER_MTOK, "null": True, "blank": True}


def _media_rate(name: str, help_text: str) -> Any:
    """An optional media rate (billing.media_pricing), capped as price_amount_check caps it."""
    cap = MEDIA_RATE_CAPS[name][0]
    return models.DecimalField(
        max_digits=18,
        decimal_places=9,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal(0)), MaxValueValidator(cap)],
        help_text=help_text,
    )


class PriceQuerySet(models.QuerySet["Price"]):
    def effective_at(self, when: dt.datetime) -> "PriceQuerySet":
        return self.filter(effective_from__lte=when)


class Price(models.Model):
    """What one model costs, from `effective_from` on. Rows are never edited
    to change a price: a new row with a later date is added, so past usage
    can always be re-priced at the rate that applied then.

    Every rate is USD per million tokens. An empty optional rate falls back
    to the rate it refines (cached input -> input, 1-hour cache write ->
    5-minute cache write -> input, reasoning -> output, audio input ->
    input, audio output -> output, image input/output -> input/output, a
    long-context rate -> its base rate). The media rates (per second of
    audio, per character, per image) are charged on top of the tokens, and
    only when set."""

    class Source(models.TextChoices):
        MANUAL = "manual", "Set by hand"
        SYNC = "sync", "Price sync"

    model = models.CharField(max_length=200, help_text="Upstream model name, or a public model name.")
    provider = models.ForeignKey(
        "proxy.Provider", null=True, blank=True, on_delete=models.CASCADE, help_text="Empty: any provider."
    )
    input_usd_per_mtok = models.DecimalField(**USD_PER_MTOK)
    cached_input_usd_per_mtok = models.DecimalField(**OPTIONAL_USD_PER_MTOK, help_text="Cache reads.")
    cache_write_5m_usd_per_mtok = models.DecimalField(**OPTIONAL_USD_PER_MTOK)
    cache_write_1h_usd_per_mtok = models.DecimalField(**OPTIONAL_USD_PER_MTOK)
    output_usd_per_mtok = models.DecimalField(**USD_PER_MTOK)
    reasoning_usd_per_mtok = models.DecimalField(**OPTIONAL_USD_PER_MTOK)
    audio_input_usd_per_mtok = models.DecimalField(
        **OPTIONAL_USD_PER_MTOK, help_text="Audio input (the realtime API). Empty: the input rate."
    )
    audio_output_usd_per_mtok = models.DecimalField(
        **OPTIONAL_USD_PER_MTOK, help_text="Audio output (the realtime API). Empty: the output rate."
    )
    image_input_usd_per_mtok = models.DecimalField(
        **OPTIONAL_USD_PER_MTOK, help_text="Image tokens in (gpt-image-1 edits). Empty: the input rate."
    )
    image_output_usd_per_mtok = models.DecimalField(
        **OPTIONAL_USD_PER_MTOK, help_text="Image tokens out (gpt-image-1). Empty: the output rate."
    )
    input_usd_per_second = _media_rate(
        "input_usd_per_second", "USD per second of audio transcribed or translated (LiteLLM input_cost_per_second)."
    )
    input_usd_per_character = _media_rate(
        "input_usd_per_character", "USD per character of speech input (LiteLLM input_cost_per_character)."
    )
    output_usd_per_image = _media_rate(
        "output_usd_per_image",
        "USD per image generated; a row named like hd/1024-x-1024/dall-e-3 prices that size and quality.",
    )
    long_context_threshold = models.PositiveIntegerField(
        null=True, blank=True, help_text="Above this many prompt tokens the long-context rates apply to the request."
    )
    long_input_usd_per_mtok = models.DecimalField(**OPTIONAL_USD_PER_MTOK)
    long_cached_input_usd_per_mtok = models.DecimalField(**OPTIONAL_USD_PER_MTOK)
    long_cache_write_5m_usd_per_mtok = models.DecimalField(**OPTIONAL_USD_PER_MTOK)
    long_cache_write_1h_usd_per_mtok = models.DecimalField(**OPTIONAL_USD_PER_MTOK)
    long_output_usd_per_mtok = models.DecimalField(**OPTIONAL_USD_PER_MTOK)
    request_fee_usd = models.DecimalField(
        max_digits=18,
        decimal_places=9,
        default=Decimal(0),
        validators=[MinValueValidator(Decimal(0)), MaxValueValidator(MAX_REQUEST_FEE_USD)],
    )
    max_output_tokens = models.PositiveIntegerField(
        null=True, blank=True, help_text="The model's output limit: the worst case a budget reserves."
    )
    effective_from = models.DateTimeField(default=timezone.now)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.MANUAL)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = PriceQuerySet.as_manager()

    class Meta:
        ordering = ["model", "-effective_from"]
        indexes = [models.Index(fields=["model", "effective_from"])]

    def __str__(self) -> str:
        return f"{self.model} from {self.effective_from:%Y-%m-%d %H:%M}"
