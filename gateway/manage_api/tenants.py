"""/api/tenants: list, create, update, deactivate."""

from django.http import HttpRequest
from ninja import Router, Status
from ninja.pagination import paginate

from accounts.models import Tenant
from accounts.services import tenant_create, tenant_update
from gateway.manage_api.errors import ManagementError, conflict, not_found
from gateway.manage_api.schemas import TenantIn, TenantOut, TenantPatch
from gateway.manage_api.writes import audited_write

router = Router(tags=["Tenants"])
REQUIRED_FIELDS = frozenset({"name", "is_prepaid", "is_active"})  # the rest are limits: null clears them


def tenant_get(tenant_id: int) -> Tenant:
    tenant = Tenant.objects.filter(pk=tenant_id).first()
    if tenant is None:
        raise not_found("tenant", tenant_id)
    return tenant


@router.get("/tenants", response=list[TenantOut])
@paginate
def tenants_list(request: HttpRequest, slug: str | None = None, is_active: bool | None = None):
    tenants = Tenant.objects.order_by("slug")
    if slug is not None:
        tenants = tenants.filter(slug=slug)
    if is_active is not None:
        tenants = tenants.filter(is_active=is_active)
    return tenants


@router.get("/tenants/{tenant_id}", response=TenantOut)
def tenants_get(request: HttpRequest, tenant_id: int) -> Tenant:
    return tenant_get(tenant_id)


@router.post("/tenants", response={201: TenantOut})
def tenants_create(request: HttpRequest, payload: TenantIn) -> Status[Tenant]:
    if Tenant.objects.filter(slug=payload.slug).exists():
        raise conflict(f"A tenant with the slug {payload.slug!r} exists.")
    with audited_write(request) as write:
        tenant = tenant_create(**payload.dict(), **write.by)
    return Status(201, tenant)


@router.patch("/tenants/{tenant_id}", response=TenantOut)
def tenants_update(request: HttpRequest, tenant_id: int, payload: TenantPatch) -> Tenant:
    """Change only the fields sent; null clears a limit."""
    with audited_write(request) as write:
        tenant = tenant_get(tenant_id)
        values = payload.dict(exclude_unset=True)
        nulled = sorted(REQUIRED_FIELDS & {name for name, value in values.items() if value is None})
        if nulled:
            raise ManagementError(400, "invalid_request", f"{', '.join(nulled)} cannot be null.")
        tenant_update(tenant=tenant, **values, **write.by)
    return tenant


@router.post("/tenants/{tenant_id}/deactivate", response=TenantOut)
def tenants_deactivate(request: HttpRequest, tenant_id: int) -> Tenant:
    """Refuse the tenant's keys from now on (403 `tenant_disabled`); nothing is deleted."""
    with audited_write(request) as write:
        tenant = tenant_get(tenant_id)
        if tenant.is_active:
            tenant.is_active = False
            tenant.save(update_fields=["is_active", "updated_at"])
            write.record("tenant.deactivate", tenant, {"is_active": [True, False]})
    return tenant
