"""Celery tasks of the proxy app: load settings, call a service, nothing else."""

from celery import shared_task
from django.conf import settings


@shared_task
def trace_retention_task() -> int:
    """Delete request traces (files and rows) older than TRACE_RETENTION_DAYS."""
    from proxy.tracing import trace_retention

    return trace_retention(settings.TRACE_RETENTION_DAYS)


@shared_task
def responses_retention_task() -> int:
    """Delete stored Responses answers past GATEWAY_RESPONSES_RETENTION_DAYS."""
    from proxy.responses_store import stored_responses_expire

    return stored_responses_expire()
