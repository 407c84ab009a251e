# The semantic cache's settings on tenants and keys: threshold, match scope,
# system prompt, answer token bounds, lifetime, and the tenant's embedding model.
import django.core.validators
from decimal import Decimal
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [("accounts", "0006_request_tracing")]

    operations = [
        migrations.AddField(
            model_name='apikey',
            name='semantic_include_system',
            field=models.BooleanField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='apikey',
            name='semantic_max_answer_tokens',
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='apikey',
            name='semantic_min_answer_tokens',
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='apikey',
            name='semantic_scope',
            field=models.CharField(blank=True, choices=[('last_user_message', 'the last user message'), ('conversation', 'the whole conversation')], max_length=20),
        ),
        migrations.AddField(
            model_name='apikey',
            name='semantic_threshold',
            field=models.DecimalField(blank=True, decimal_places=3, help_text="Serve an earlier answer to a question at least this similar (0 to 1). Empty: the tenant's.", max_digits=4, null=True, validators=[django.core.validators.MinValueValidator(Decimal('0')), django.core.validators.MaxValueValidator(Decimal('1'))]),
        ),
        migrations.AddField(
            model_name='apikey',
            name='semantic_ttl_seconds',
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='tenant',
            name='semantic_embedding_model',
            field=models.CharField(blank=True, help_text='The embeddings model (a route) that embeds questions. Empty: CACHESTORE_SEMANTIC_EMBEDDING_MODEL.', max_length=200),
        ),
        migrations.AddField(
            model_name='tenant',
            name='semantic_include_system',
            field=models.BooleanField(default=True, help_text='Match only answers given under the same system prompt. Off: it is ignored.'),
        ),
        migrations.AddField(
            model_name='tenant',
            name='semantic_max_answer_tokens',
            field=models.PositiveIntegerField(blank=True, help_text='Longer answers are not offered to similar questions. Empty: no maximum.', null=True),
        ),
        migrations.AddField(
            model_name='tenant',
            name='semantic_min_answer_tokens',
            field=models.PositiveIntegerField(blank=True, help_text='Shorter answers are not offered to similar questions. Empty: no minimum.', null=True),
        ),
        migrations.AddField(
            model_name='tenant',
            name='semantic_scope',
            field=models.CharField(choices=[('last_user_message', 'the last user message'), ('conversation', 'the whole conversation')], default='last_user_message', max_length=20),
        ),
        migrations.AddField(
            model_name='tenant',
            name='semantic_threshold',
            field=models.DecimalField(blank=True, decimal_places=3, help_text='Serve an earlier answer to a question at least this similar (cosine, 0 to 1). Empty: off.', max_digits=4, null=True, validators=[django.core.validators.MinValueValidator(Decimal('0')), django.core.validators.MaxValueValidator(Decimal('1'))]),
        ),
        migrations.AddField(
            model_name='tenant',
            name='semantic_ttl_seconds',
            field=models.PositiveIntegerField(blank=True, help_text='How long an answer is offered to similar questions (at most the cache lifetime). Empty: that.', null=True),
        ),
    ]
