"""Celery tasks: load by id or settings, call a service, nothing else."""

from celery import shared_task
from django.conf import settings

from billing.spool import usage_left_behind_replay


@shared_task
def usage_spool_replay_task() -> int:
    """Load usage left on disk: journals of processes that died, and what a
    shutdown spooled because the database was down."""
    return usage_left_behind_replay()


@shared_task
def spend_counters_resync_task() -> int:
    """Raise Redis spend counters that fell behind the books."""
    from billing.counters import spend_counters_resync

    return spend_counters_resync()


@shared_task
def prices_sync_task() -> dict[str, int]:
    """The nightly price sync from the LiteLLM pricing file."""
    from billing.sync import prices_sync

    return prices_sync(url=settings.BILLING_PRICES_URL).counts()


@shared_task
def usage_rollup_task() -> int:
    """Roll every record not yet counted into hourly and daily rollups."""
    from billing.rollups import usage_rollup

    return usage_rollup()


@shared_task
def usage_retention_task() -> int:
    """Prune raw usage records older than BILLING_USAGE_RETENTION_DAYS, once rolled up."""
    from billing.rollups import usage_retention

    return usage_retention(days=settings.BILLING_USAGE_RETENTION_DAYS)


@shared_task
def books_reconcile_task() -> bool:
    """Check spend counters, raw usage, rollups and the prepaid ledger agree."""
    from billing.reconcile import books_reconcile

    return books_reconcile().ok


@shared_task
def webhook_deliveries_send_task() -> int:
    """Send the webhook outbox: what is due now, new events and retries."""
    from billing.webhook_delivery import webhook_deliveries_send

    return webhook_deliveries_send()
