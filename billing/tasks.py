from celery import shared_task

from billing.meter import usage_spool_replay


@shared_task
def usage_spool_replay_task() -> int:
    """Load usage that a shutdown spooled to disk because the database was down."""
    return usage_spool_replay()
