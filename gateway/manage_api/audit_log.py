"""/api/audit: the trail of every write of money, access or routing, by this API, admin or a command."""

from django.http import HttpRequest
from ninja import Router
from ninja.pagination import paginate

from accounts.models import AuditEntry
from gateway.manage_api.schemas import AuditOut

router = Router(tags=["Audit"])


@router.get("/audit", response=list[AuditOut])
@paginate
def audit_list(
    request: HttpRequest, object_type: str | None = None, object_id: str | None = None, action: str | None = None
):
    """Newest first. `object_type` is "app_label.model", e.g. "accounts.tenant"."""
    entries = AuditEntry.objects.order_by("-at", "-id")
    for field, value in (("object_type", object_type), ("object_id", object_id), ("action", action)):
        if value is not None:
            entries = entries.filter(**{field: value})
    return entries
