"""/api/providers and /api/routes. Credentials are write-only.

Routes are read generically (a route's deployments, when it has them), so
this stays thin while the routing model grows; writes go through
proxy.services.route_upsert.
"""

from typing import Any

from django.http import HttpRequest
from ninja import Router, Status
from ninja.pagination import paginate

from accounts.audit import changes_between, credential_changes
from gateway.manage_api.errors import conflict, not_found
from gateway.manage_api.schemas import ProviderIn, ProviderOut, ProviderPatch, RouteIn, RouteOut
from gateway.manage_api.writes import audited_write
from proxy.models import Provider, Route
from proxy.services import provider_upsert, route_upsert

router = Router(tags=["Providers and routes"])
DEPLOYMENT_FIELDS = ("provider", "upstream_model", "weight", "priority", "rpm", "tpm", "is_active")


def provider_get(provider_id: int) -> Provider:
    provider = Provider.objects.filter(pk=provider_id).first()
    if provider is None:
        raise not_found("provider", provider_id)
    return provider


@router.get("/providers", response=list[ProviderOut])
@paginate
def providers_list(request: HttpRequest):
    return Provider.objects.order_by("name")


@router.post("/providers", response={201: ProviderOut})
def providers_create(request: HttpRequest, payload: ProviderIn) -> Status[Provider]:
    if Provider.objects.filter(name=payload.name).exists():
        raise conflict(f"A provider named {payload.name!r} exists; change it with PATCH /api/providers/ID.")
    with audited_write(request) as write:
        provider, _ = provider_upsert(**payload.dict())
        changes = {"name": provider.name, "kind": provider.kind, "base_url": provider.base_url}
        changes |= credential_changes(payload.api_key, payload.api_key_env)
        write.record("provider.create", provider, changes)
    return Status(201, provider)


@router.patch("/providers/{provider_id}", response=ProviderOut)
def providers_update(request: HttpRequest, provider_id: int, payload: ProviderPatch) -> Provider:
    """Change only the fields sent. A credential replaces the other kind (a key clears the variable and back)."""
    with audited_write(request) as write:
        provider = provider_get(provider_id)
        before = {"kind": provider.kind, "base_url": provider.base_url}
        provider, changed = provider_upsert(
            name=provider.name,
            kind=payload.kind or provider.kind,
            base_url=payload.base_url or provider.base_url,
            api_key=payload.api_key,
            api_key_env=payload.api_key_env,
        )
        if changed:
            after = {"kind": provider.kind, "base_url": provider.base_url}
            changes = changes_between(before, after)
            changes |= credential_changes(payload.api_key, payload.api_key_env)
            write.record("provider.update", provider, changes)
    return provider


@router.get("/routes", response=list[RouteOut])
@paginate
def routes_list(request: HttpRequest):
    return [route_out(route) for route in Route.objects.order_by("model")]


@router.post("/routes", response={201: RouteOut})
def routes_create(request: HttpRequest, payload: RouteIn) -> Status[dict[str, Any]]:
    """Point a model name at a provider (added to the route's deployments when the route exists)."""
    with audited_write(request) as write:
        provider = Provider.objects.filter(name=payload.provider).first()
        if provider is None:
            raise not_found("provider named", repr(payload.provider))
        route, _ = route_upsert(
            model=payload.model,
            provider=provider,
            upstream_model=payload.upstream_model,
            rpm=payload.rpm,
            tpm=payload.tpm,
            **write.by,
        )
    return Status(201, route_out(route))


def route_out(route: Route) -> dict[str, Any]:
    return {"id": route.pk, "model": route.model, "is_active": route.is_active, "deployments": _deployments(route)}


def _deployments(route: Route) -> list[dict[str, Any]]:
    related = getattr(route, "deployments", None)
    if related is not None:
        rows = related.select_related("provider").all()
    elif getattr(route, "provider_id", None) is not None:
        rows = [route]  # a route that is its own single deployment
    else:
        rows = []
    return [_deployment(row) for row in rows]


def _deployment(row: Any) -> dict[str, Any]:
    out = {name: getattr(row, name) for name in DEPLOYMENT_FIELDS if hasattr(row, name)}
    out["provider"] = row.provider.name
    return out
