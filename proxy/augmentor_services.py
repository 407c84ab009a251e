"""Writes for augmentors (augmentor_create, gateway_apply, admin)."""

from collections.abc import Sequence
from dataclasses import dataclass

from django.db import transaction
from django.db.models import QuerySet

from accounts.audit import AuditActor, audit
from proxy.catalog_loader import catalog_load
from proxy.models import Augmentor, ModelAlias, Route, Router, is_alias_pattern
from proxy.routing import Catalog

_NAME_MAX = Augmentor._meta.get_field("name").max_length or 200
SEARCH_PROVIDERS = tuple(Augmentor.SearchProvider.values)


@dataclass(frozen=True)
class AugmentorSpec:
    """An augmentor as written: the command's flags, a file entry, the admin form."""

    name: str
    designator: str
    target: str
    search_provider: str = Augmentor.SearchProvider.SEARXNG
    max_search_results: int = 5
    max_scrape_urls: int = 3
    max_context_tokens: int = 2000
    purpose: str = ""


def augmentor_check(spec: AugmentorSpec, *, catalog: Catalog | None = None) -> None:
    """Refuse an augmentor that could not work as written: a name a route,
    alias or router already has (or a pattern), a designator or target the
    gateway does not route (or that is a router or an augmentor: they do not
    chain), an unknown search provider, limits below 1.
    `catalog`: the routing catalog to check names against (default: loaded now)."""
    name = spec.name
    for value in (name, spec.designator, spec.target):
        if not isinstance(value, str) or not value.strip() or value != value.strip() or len(value) > _NAME_MAX:
            raise ValueError(f"augmentor {name!r}: {value!r} is not a model name (1 to {_NAME_MAX} characters)")
    if is_alias_pattern(name):
        raise ValueError(f"augmentor {name}: the name must be exact, not a pattern")
    taken = Route.objects.filter(model=name).exists() or ModelAlias.objects.filter(pattern=name).exists()
    if taken or Router.objects.filter(name=name).exists():
        raise ValueError(f"augmentor {name}: a route, alias or router of that name exists; the name must be its own")
    if spec.search_provider not in SEARCH_PROVIDERS:
        raise ValueError(f"augmentor {name}: the search provider must be one of {', '.join(SEARCH_PROVIDERS)}")
    limits = ("max_search_results", "max_scrape_urls", "max_context_tokens")
    for limit in limits:
        value = getattr(spec, limit)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1 or (limit != limits[2] and value > 100):
            raise ValueError(f"augmentor {name}: {limit} must be a whole number from 1 (to 100 for the counts)")
    chained = set(Router.objects.values_list("name", flat=True))
    chained |= set(Augmentor.objects.exclude(name=name).values_list("name", flat=True)) | {name}
    catalog = catalog or catalog_load()
    for role, value in (("designator", spec.designator), ("target", spec.target)):
        if value in chained:
            raise ValueError(f"augmentor {name}: the {role} {value!r} is a router or augmentor; they do not chain")
        if catalog.lookup(value) is None:
            raise ValueError(
                f"augmentor {name}: the {role} {value!r} is not a model the gateway routes; create its route first "
                f"(manage.py route_create {value} --provider NAME)"
            )


# What an augmentor is set up with besides its name (and is_active): the
# command, gateway_apply and the admin form all take exactly these.
AUGMENTOR_FIELDS = (
    "designator",
    "target",
    "search_provider",
    "max_search_results",
    "max_scrape_urls",
    "max_context_tokens",
    "purpose",
)


@transaction.atomic
def augmentor_upsert(
    spec: AugmentorSpec, *, actor: AuditActor = None, request_id: str = "", catalog: Catalog | None = None
) -> tuple[Augmentor, bool]:
    """Create or update (and activate) an augmentor exactly as `spec` says;
    returns (augmentor, changed). Audited."""
    augmentor_check(spec, catalog=catalog)
    row = Augmentor.objects.select_for_update().filter(name=spec.name).first() or Augmentor(name=spec.name)
    before = [getattr(row, f) for f in AUGMENTOR_FIELDS] + [row.is_active]
    for name in AUGMENTOR_FIELDS:
        setattr(row, name, getattr(spec, name))
    row.is_active = True
    changed = row.pk is None or before != [getattr(row, f) for f in AUGMENTOR_FIELDS] + [row.is_active]
    if changed:
        row.save()  # also tells every process to reload its catalog
        changes = {"name": spec.name, **{f: getattr(spec, f) for f in AUGMENTOR_FIELDS}}
        audit(actor, "augmentor.upsert", row, changes, request_id=request_id)
    return row, changed


@transaction.atomic
def augmentor_delete(*, name: str, actor: AuditActor = None, request_id: str = "") -> bool:
    """Remove the augmentor; False when there was none."""
    return _augmentors_remove(Augmentor.objects.filter(name=name), actor, request_id) > 0


@transaction.atomic
def augmentors_prune(*, keep: Sequence[str], actor: AuditActor = None, request_id: str = "") -> int:
    """Remove every augmentor not named in `keep` (the declarative file); returns how many."""
    return _augmentors_remove(Augmentor.objects.exclude(name__in=list(keep)), actor, request_id)


def _augmentors_remove(augmentors: QuerySet[Augmentor], actor: AuditActor, request_id: str) -> int:
    removed = list(augmentors.select_for_update())
    for row in removed:
        audit(actor, "augmentor.delete", row, {"name": row.name}, request_id=request_id)
    Augmentor.objects.filter(pk__in=[row.pk for row in removed]).delete()
    return len(removed)
