"""Writes for smart routers (router_create, gateway_apply, admin)."""

from collections.abc import Sequence

from django.db import transaction
from django.db.models import QuerySet

from accounts.audit import AuditActor, audit
from proxy.catalog_loader import catalog_load
from proxy.models import Augmentor, ModelAlias, Route, Router, is_alias_pattern
from proxy.routing import Catalog

_NAME_MAX = Router._meta.get_field("name").max_length or 200


def router_check(
    name: str,
    designator: str,
    candidates: Sequence[str],
    fallback: str = "",
    *,
    catalog: Catalog | None = None,
) -> None:
    """Refuse a router that could not work as written: a name a route or
    alias already has (or a pattern), no candidates or repeated ones, a
    designator or candidate that the gateway does not route (or that is a
    router: routers do not chain; a candidate may be an augmentor), a
    fallback that is not a candidate.
    `catalog`: the routing catalog to check names against (default: loaded now)."""
    for value in (name, designator, *candidates):
        if not isinstance(value, str) or not value.strip() or value != value.strip() or len(value) > _NAME_MAX:
            raise ValueError(f"router {name!r}: {value!r} is not a model name (1 to {_NAME_MAX} characters)")
    if is_alias_pattern(name):
        raise ValueError(f"router {name}: the name must be exact, not a pattern")
    if Route.objects.filter(model=name).exists() or ModelAlias.objects.filter(pattern=name).exists():
        raise ValueError(f"router {name}: a route or alias of that name exists; a router's name must be its own")
    if Augmentor.objects.filter(name=name).exists():
        raise ValueError(f"router {name}: an augmentor of that name exists; a router's name must be its own")
    if not candidates:
        raise ValueError(f"router {name}: needs at least one candidate")
    if len(set(candidates)) != len(candidates):
        raise ValueError(f"router {name}: a candidate is listed twice")
    if fallback and fallback not in candidates:
        raise ValueError(f"router {name}: the fallback {fallback!r} must be one of the candidates")
    others = set(Router.objects.exclude(name=name).values_list("name", flat=True)) | {name}
    catalog = catalog or catalog_load()
    for role, value in (("designator", designator), *(("candidate", c) for c in candidates)):
        if value in others:
            raise ValueError(f"router {name}: the {role} {value!r} is a router; routers do not chain")
        if catalog.lookup(value) is None and not (role == "candidate" and value in catalog.augmentors):
            raise ValueError(
                f"router {name}: the {role} {value!r} is not a model the gateway routes; create its route first "
                f"(manage.py route_create {value} --provider NAME)"
            )


@transaction.atomic
def router_upsert(
    *,
    name: str,
    designator: str,
    candidates: Sequence[str],
    purpose: str | None = None,
    fallback: str | None = None,
    actor: AuditActor = None,
    request_id: str = "",
    catalog: Catalog | None = None,
) -> tuple[Router, bool]:
    """Create or update (and activate) a smart router; returns (router,
    changed). `purpose` None keeps the router's; `fallback` None keeps it
    while it is still a candidate ("" : the first candidate). Audited."""
    router = Router.objects.select_for_update().filter(name=name).first() or Router(name=name)
    if fallback is None:
        fallback = router.fallback if router.fallback in candidates else ""
    router_check(name, designator, list(candidates), fallback, catalog=catalog)
    before = (router.designator, router.candidates, router.purpose, router.fallback, router.is_active)
    router.designator, router.candidates = designator, list(candidates)
    router.fallback, router.is_active = fallback, True
    if purpose is not None:
        router.purpose = purpose
    after = (router.designator, router.candidates, router.purpose, router.fallback, router.is_active)
    changed = router.pk is None or before != after
    if changed:
        router.save()  # also tells every process to reload its catalog
        changes = {
            "name": name,
            "designator": designator,
            "candidates": list(candidates),
            "purpose": router.purpose,
            "fallback": fallback,
        }
        audit(actor, "router.upsert", router, changes, request_id=request_id)
    return router, changed


@transaction.atomic
def router_delete(*, name: str, actor: AuditActor = None, request_id: str = "") -> bool:
    """Remove the router; False when there was none."""
    return _routers_remove(Router.objects.filter(name=name), actor, request_id) > 0


@transaction.atomic
def routers_prune(*, keep: Sequence[str], actor: AuditActor = None, request_id: str = "") -> int:
    """Remove every router not named in `keep` (the declarative file); returns how many."""
    return _routers_remove(Router.objects.exclude(name__in=list(keep)), actor, request_id)


def _routers_remove(routers: QuerySet[Router], actor: AuditActor, request_id: str) -> int:
    removed = list(routers.select_for_update())
    for router in removed:
        audit(actor, "router.delete", router, {"name": router.name}, request_id=request_id)
    Router.objects.filter(pk__in=[router.pk for router in removed]).delete()
    return len(removed)
