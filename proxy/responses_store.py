"""The stored Responses API answers (proxy.StoredResponse): every query.

Imported only inside the functions of proxy.responses_state that run one of
these in a thread, so the request path's modules import no ORM. Each
function gives its connection back when done: the reads run before a
stream starts and must not hold a pooled connection for its whole length.
"""

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone

from gateway.kernel.errors import backend_unavailable
from proxy.models import StoredResponse

log = logging.getLogger(__name__)
T = TypeVar("T")


def _released(work: Callable[[], T]) -> T:
    """`work()`; a cut or hung database is a quick 503 backend_unavailable."""
    try:
        return work()
    except DatabaseError:
        log.warning("stored responses: the database is unavailable", exc_info=True)
        raise backend_unavailable("database") from None
    finally:
        if not connection.in_atomic_block:
            connection.close()


def stored_response_save(row: dict[str, Any]) -> None:
    """Keep one answer for GATEWAY_RESPONSES_RETENTION_DAYS. A repeated id
    (never made twice by the gateway) leaves the first row as it was."""

    def save() -> None:
        now = timezone.now()
        expires = now + dt.timedelta(days=settings.GATEWAY_RESPONSES_RETENTION_DAYS)
        StoredResponse.objects.bulk_create(
            [StoredResponse(**row, created_at=now, expires_at=expires)], ignore_conflicts=True
        )

    _released(save)


def stored_response_conversation(tenant_id: int, response_id: str) -> list[dict[str, Any]] | None:
    """The conversation up to and including this tenant's response: the
    input items it was made from, then its output. None: no such response
    (another tenant's, expired or deleted)."""

    def read() -> list[dict[str, Any]] | None:
        row = (
            StoredResponse.objects.for_tenant(tenant_id)
            .filter(response_id=response_id)
            .values_list("input_items", "response")
            .first()
        )
        if row is None:
            return None
        items, response = row
        output = response.get("output") if isinstance(response, dict) else None
        return [*items, *(output if isinstance(output, list) else [])]

    return _released(read)


def stored_response_get(tenant_id: int, response_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """This tenant's response object and its input items; None: not found."""

    def read() -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        row = (
            StoredResponse.objects.for_tenant(tenant_id)
            .filter(response_id=response_id)
            .values_list("response", "input_items")
            .first()
        )
        return None if row is None else (row[0], row[1])

    return _released(read)


def stored_response_delete(tenant_id: int, response_id: str) -> bool:
    """Delete this tenant's response; False: there was none to delete."""

    def delete() -> bool:
        deleted, _ = StoredResponse.objects.for_tenant(tenant_id).filter(response_id=response_id).delete()
        return deleted > 0

    return _released(delete)


def stored_responses_expire(now: dt.datetime | None = None) -> int:
    """Delete every response past its expiry; returns how many (the
    retention task)."""
    deleted, _ = StoredResponse.objects.filter(expires_at__lte=now or timezone.now()).delete()
    return deleted
