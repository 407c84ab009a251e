# Augmentors: a model name whose requests a designator augments with web
# search results or scraped pages before its target model answers.
import django.core.validators
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("proxy", "0010_deployment_limits")]

    operations = [
        migrations.CreateModel(
            name="Augmentor",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(help_text="The model name clients ask for.", max_length=200, unique=True)),
                (
                    "designator",
                    models.CharField(help_text="The model that decides whether to search or scrape.", max_length=200),
                ),
                ("target", models.CharField(help_text="The model that answers, with what was found.", max_length=200)),
                (
                    "search_provider",
                    models.CharField(
                        choices=[
                            ("searxng", "SearXNG (AUGMENT_SEARXNG_URL)"),
                            ("perplexity", "Perplexity (PERPLEXITY_API_KEY)"),
                        ],
                        default="searxng",
                        max_length=16,
                    ),
                ),
                (
                    "max_search_results",
                    models.PositiveSmallIntegerField(
                        default=5,
                        help_text="Search results added to the prompt, at most.",
                        validators=[django.core.validators.MinValueValidator(1)],
                    ),
                ),
                (
                    "max_scrape_urls",
                    models.PositiveSmallIntegerField(
                        default=3,
                        help_text="Pages scraped for one request, at most.",
                        validators=[django.core.validators.MinValueValidator(1)],
                    ),
                ),
                (
                    "max_context_tokens",
                    models.PositiveIntegerField(
                        default=2000,
                        help_text="What is added to the prompt, at most.",
                        validators=[django.core.validators.MinValueValidator(1)],
                    ),
                ),
                (
                    "purpose",
                    models.TextField(blank=True, help_text="What the augmentor is for, told to the designator."),
                ),
                ("is_active", models.BooleanField(default=True)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                ("updated_at", models.DateTimeField(auto_now=True)),
            ],
            options={"ordering": ["name"]},
        ),
    ]
