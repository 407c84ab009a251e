# The semantic cache's vectors: one row per cached answer's question, searched
# by each process's in-process index (cachestore.semantic_index); and each cache
# entry's hit count (the popular entries of cache_warmup and the start-up LRU).
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [("cachestore", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name='cacheentryrecord',
            name='hits',
            field=models.PositiveBigIntegerField(default=0),
        ),
        migrations.AddIndex(
            model_name='cacheentryrecord',
            index=models.Index(fields=['tenant', 'hits'], name='cachestore__tenant__9055fb_idx'),
        ),
        migrations.CreateModel(
            name='SemanticVector',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('partition', models.CharField(max_length=64)),
                ('entry_key', models.CharField(help_text="The cache entry this question's answer is stored under.", max_length=64)),
                ('vector', models.BinaryField(help_text='float32, unit length.')),
                ('created_at', models.DateTimeField(db_index=True)),
                ('expires_at', models.DateTimeField(db_index=True)),
                ('tenant', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='accounts.tenant')),
            ],
            options={
                'verbose_name': 'semantic cache vector',
                'indexes': [models.Index(fields=['tenant', 'partition'], name='cachestore__tenant__db7eb4_idx')],
            },
        ),
    ]
