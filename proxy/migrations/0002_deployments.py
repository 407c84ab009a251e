"""Several deployments per route, fallbacks and per-provider timeouts.

Three steps, each its own transaction (PostgreSQL refuses to alter a table
with pending deferred-constraint checks from rows written in the same
transaction): add the new tables and columns, copy each route's provider into
its first deployment (0003), then drop the old columns (0004).
"""

import django.core.validators
import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

import proxy.models


class Migration(migrations.Migration):
    dependencies = [
        ("proxy", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="provider",
            name="connect_timeout",
            field=models.FloatField(blank=True, help_text="Seconds to connect.", null=True,
                                    validators=[django.core.validators.MinValueValidator(0.001)]),
        ),
        migrations.AddField(
            model_name="provider",
            name="first_byte_timeout",
            field=models.FloatField(blank=True, help_text="Seconds to the response headers.", null=True,
                                    validators=[django.core.validators.MinValueValidator(0.001)]),
        ),
        migrations.AddField(
            model_name="provider",
            name="idle_timeout",
            field=models.FloatField(blank=True, help_text="Longest silence between two chunks.", null=True,
                                    validators=[django.core.validators.MinValueValidator(0.001)]),
        ),
        migrations.AddField(
            model_name="route",
            name="fallbacks",
            field=models.JSONField(blank=True, default=list, validators=[proxy.models.fallbacks_validate]),
        ),
        # Nullable from here on, so that undoing 0004 can add the column back
        # before 0003's reverse fills it.
        migrations.AlterField(
            model_name="route",
            name="provider",
            field=models.ForeignKey(null=True, on_delete=django.db.models.deletion.PROTECT, related_name="routes",
                                    to="proxy.provider"),
        ),
        migrations.CreateModel(
            name="Deployment",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("upstream_model", models.CharField(blank=True, help_text="Empty: the route's name (for a wildcard, the rest of the name).", max_length=200)),
                ("weight", models.PositiveIntegerField(default=1, validators=[django.core.validators.MinValueValidator(1)])),
                ("priority", models.SmallIntegerField(default=0, help_text="Lower is preferred.")),
                ("is_active", models.BooleanField(default=True)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                ("provider", models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name="deployments", to="proxy.provider")),
                ("route", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="deployments", to="proxy.route")),
            ],
            options={
                "ordering": ["route", "priority", "id"],
                "constraints": [
                    models.UniqueConstraint(fields=("route", "provider", "upstream_model"), name="proxy_deployment_unique")
                ],
            },
        ),
    ]
