"""Celery tasks: load by id or settings, call a service, nothing else."""

from celery import shared_task


@shared_task
def cache_expire_task() -> int:
    """Delete the database backend's expired cache entries."""
    from cachestore.services import cache_expire

    return cache_expire()
