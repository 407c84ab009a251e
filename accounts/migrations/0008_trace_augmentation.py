# RequestTrace.augmentation: an augmentor's steps (designator, searches, scrapes, text added), kept by TRACE_SINK=db.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0007_semantic_cache"),
    ]

    operations = [
        migrations.AddField(
            model_name="requesttrace",
            name="augmentation",
            field=models.JSONField(
                blank=True,
                default=list,
                help_text="An augmentor's steps: the designator's decision, each search and scrape, the text added.",
            ),
        ),
    ]
