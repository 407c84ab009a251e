# Media prices and their ledger buckets: per second of audio, per character
# of speech, per image (LiteLLM's input_cost_per_second,
# input_cost_per_character, output_cost_per_image), image token rates
# (input_cost_per_image_token, output_cost_per_image_token), and the usage
# record's matching counts, so a media request's cost is still the sum over
# its buckets.
from decimal import Decimal

import django.core.validators
from django.db import migrations, models


def _usd(cap: str, help_text: str) -> models.DecimalField:
    return models.DecimalField(
        blank=True,
        decimal_places=9,
        help_text=help_text,
        max_digits=18,
        null=True,
        validators=[
            django.core.validators.MinValueValidator(Decimal("0")),
            django.core.validators.MaxValueValidator(Decimal(cap)),
        ],
    )


class Migration(migrations.Migration):
    dependencies = [("billing", "0009_realtime_audio")]

    operations = [
        migrations.AddField(
            model_name="price",
            name="image_input_usd_per_mtok",
            field=_usd("100000", "Image tokens in (gpt-image-1 edits). Empty: the input rate."),
        ),
        migrations.AddField(
            model_name="price",
            name="image_output_usd_per_mtok",
            field=_usd("100000", "Image tokens out (gpt-image-1). Empty: the output rate."),
        ),
        migrations.AddField(
            model_name="price",
            name="input_usd_per_character",
            field=_usd("1", "USD per character of speech input (LiteLLM input_cost_per_character)."),
        ),
        migrations.AddField(
            model_name="price",
            name="input_usd_per_second",
            field=_usd("10", "USD per second of audio transcribed or translated (LiteLLM input_cost_per_second)."),
        ),
        migrations.AddField(
            model_name="price",
            name="output_usd_per_image",
            field=_usd(
                "100", "USD per image generated; a row named like hd/1024-x-1024/dall-e-3 prices that size and quality."
            ),
        ),
        migrations.AddField(
            model_name="usagerecord",
            name="audio_input_ms",
            field=models.PositiveIntegerField(default=0, help_text="Audio transcribed or translated, in ms."),
        ),
        migrations.AddField(
            model_name="usagerecord",
            name="image_input_tokens",
            field=models.PositiveIntegerField(default=0, help_text="Image tokens in (gpt-image-1)."),
        ),
        migrations.AddField(
            model_name="usagerecord",
            name="image_output_tokens",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="usagerecord",
            name="input_characters",
            field=models.PositiveIntegerField(default=0, help_text="Characters of speech input."),
        ),
        migrations.AddField(
            model_name="usagerecord",
            name="output_images",
            field=models.PositiveIntegerField(default=0, help_text="Images generated."),
        ),
    ]
