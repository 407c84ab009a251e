# Upstream limits per deployment: requests and tokens per minute that the
# gateway never exceeds towards that deployment (empty: no limit).
import django.core.validators
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("proxy", "0009_guardrails")]

    operations = [
        migrations.AddField(
            model_name="deployment",
            name="rpm",
            field=models.PositiveIntegerField(
                blank=True,
                help_text="Requests per minute the provider allows this deployment; empty: no limit.",
                null=True,
                validators=[django.core.validators.MinValueValidator(1)],
            ),
        ),
        migrations.AddField(
            model_name="deployment",
            name="tpm",
            field=models.PositiveIntegerField(
                blank=True,
                help_text="Tokens per minute (input and output) the provider allows this deployment; empty: no limit.",
                null=True,
                validators=[django.core.validators.MinValueValidator(1)],
            ),
        ),
    ]
