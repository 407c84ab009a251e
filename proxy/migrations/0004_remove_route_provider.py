"""A route's provider now lives in its deployments (copied there by 0003)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("proxy", "0003_route_deployments_data"),
    ]

    operations = [
        migrations.RemoveField(model_name="route", name="provider"),
        migrations.RemoveField(model_name="route", name="upstream_model"),
    ]
