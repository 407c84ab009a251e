"""What every write of the management API shares: one transaction with its audit entry."""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Model
from django.http import HttpRequest

from accounts.audit import audit
from gateway.manage_api.auth import actor_of, request_id
from gateway.manage_api.errors import ManagementError, conflict


class Audited:
    """Collects what one write did; `record()` adds its audit entry."""

    def __init__(self, request: HttpRequest) -> None:
        self.request = request

    @property
    def by(self) -> dict[str, Any]:
        """For services that audit their own writes: this request's actor and id."""
        return {"actor": actor_of(self.request), "request_id": request_id(self.request)}

    def record(self, action: str, obj: Model, changes: Mapping[str, Any] | None = None) -> None:
        audit(actor_of(self.request), action, obj, changes, request_id=request_id(self.request))


@contextmanager
def audited_write(request: HttpRequest) -> Iterator[Audited]:
    """A transaction in which the write and its audit entries commit together.

    The services' own refusals (ValueError) become 400 `invalid_request`,
    and a unique constraint becomes 409 `conflict`.
    """
    try:
        with transaction.atomic():
            yield Audited(request)
    except ValueError as exc:
        raise ManagementError(400, "invalid_request", str(exc)) from None
    except IntegrityError as exc:
        raise conflict(f"The change conflicts with an existing object: {exc}") from None
