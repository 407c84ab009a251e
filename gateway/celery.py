"""The Celery app: `celery -A gateway.celery worker` (and `beat`).

Only workers and beat import it. The web process never sends a task, so it
does not load Celery at all (9 MB of every server process's memory)."""

import os

from celery import Celery
from celery.schedules import crontab

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")

app = Celery("gateway")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.conf.beat_schedule = {
    "usage-spool-replay": {"task": "billing.tasks.usage_spool_replay_task", "schedule": crontab(minute="*")},
    "spend-counters-resync": {
        "task": "billing.tasks.spend_counters_resync_task",
        "schedule": crontab(minute="*"),
    },
    "usage-rollup": {"task": "billing.tasks.usage_rollup_task", "schedule": crontab(minute="*/5")},
    "books-reconcile": {"task": "billing.tasks.books_reconcile_task", "schedule": crontab(minute=17)},
    "usage-retention": {"task": "billing.tasks.usage_retention_task", "schedule": crontab(hour=3, minute=30)},
    "trace-retention": {"task": "proxy.tasks.trace_retention_task", "schedule": crontab(hour=3, minute=45)},
    "responses-retention": {"task": "proxy.tasks.responses_retention_task", "schedule": crontab(minute=25)},
    "prices-sync": {"task": "billing.tasks.prices_sync_task", "schedule": crontab(hour=2, minute=10)},
    "cache-expire": {"task": "cachestore.tasks.cache_expire_task", "schedule": crontab(minute="*/10")},
    # Every 10 seconds: a webhook event waits at most that long for its first attempt.
    "webhooks-send": {"task": "billing.tasks.webhook_deliveries_send_task", "schedule": 10.0},
}
