"""Writes for providers, routes and their deployments, and aliases (admin, commands and gateway_apply)."""

import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import QuerySet

from accounts.audit import AuditActor, audit
from proxy.models import Augmentor, Deployment, ModelAlias, Provider, Route, Router, is_alias_pattern
from proxy.presets import base_url_normalize

TIMEOUT_FIELDS = ("connect_timeout", "first_byte_timeout", "idle_timeout")
_URL_MAX = Provider._meta.get_field("base_url").max_length or 500


@transaction.atomic
def provider_upsert(
    *,
    name: str,
    kind: str,
    base_url: str,
    api_key: str | None = None,
    api_key_env: str | None = None,
    timeouts: dict[str, float | None] | None = None,
) -> tuple[Provider, bool]:
    """Create or update a provider; returns (provider, changed).

    A stored key and an environment variable are exclusive: setting one
    clears the other, so the credential used is never ambiguous. The base
    URL is stored in the form the adapters use (proxy.presets.base_url_normalize:
    https://api.anthropic.com becomes .../v1). `timeouts`
    sets the named ones of connect_timeout, first_byte_timeout and
    idle_timeout (seconds; None: the setting's default) and keeps the others.
    """
    if kind not in Provider.Kind.values:
        raise ValueError(f"unknown provider kind {kind!r}; expected one of {', '.join(Provider.Kind.values)}")
    base_url = base_url_normalize(kind, base_url)
    if len(base_url) > _URL_MAX:
        raise ValueError(f"base URL is longer than {_URL_MAX} characters")
    provider = Provider.objects.filter(name=name).first() or Provider(name=name)
    before = (provider.kind, provider.base_url, provider.api_key_env, provider.api_key_encrypted, _timeouts(provider))
    provider.kind, provider.base_url = kind, base_url
    for field, seconds in (timeouts or {}).items():
        if field not in TIMEOUT_FIELDS:
            raise ValueError(f"unknown timeout {field!r}; expected one of {', '.join(TIMEOUT_FIELDS)}")
        if seconds is not None and not seconds > 0:
            raise ValueError(f"{field} must be a number of seconds above 0")
        setattr(provider, field, None if seconds is None else float(seconds))
    if api_key_env is not None:
        provider.api_key_env = api_key_env
        provider.set_api_key("")
    if api_key is not None:
        if provider.resolve_api_key() != api_key or provider.api_key_env:
            provider.set_api_key(api_key)
        provider.api_key_env = ""
    after = (provider.kind, provider.base_url, provider.api_key_env, provider.api_key_encrypted, _timeouts(provider))
    changed = provider.pk is None or before != after
    if changed:
        provider.save()
    return provider, changed


def _timeouts(provider: Provider) -> tuple[float | None, ...]:
    return tuple(getattr(provider, field) for field in TIMEOUT_FIELDS)


@dataclass(frozen=True, slots=True)
class DeploymentSpec:
    provider: Provider
    upstream_model: str = ""
    weight: int = 1
    priority: int = 0
    rpm: int | None = None  # the provider's limits for this deployment (None: none)
    tpm: int | None = None


@transaction.atomic
def route_upsert(
    *,
    model: str,
    provider: Provider,
    upstream_model: str = "",
    weight: int = 1,
    priority: int = 0,
    rpm: int | None = None,
    tpm: int | None = None,
    fallbacks: Sequence[str] | None = None,
    description: str | None = None,
    actor: AuditActor = None,
    request_id: str = "",
) -> tuple[Route, bool]:
    """Add a deployment to a route (created if new), or update the weight,
    priority and upstream limits (rpm, tpm; None: none) of the one with this
    provider and upstream model; returns
    (route, changed). `fallbacks` and `description` None keep the route's.
    A change is audited (accounts.audit) as made by `actor`."""
    route, changed = _route_activate(model, fallbacks, description)
    changed |= _deployment_put(route, DeploymentSpec(provider, upstream_model, weight, priority, rpm, tpm))
    if changed:
        route.save()  # also tells every process to reload its catalog
        deployment = {
            "provider": provider.name,
            "upstream_model": upstream_model,
            "weight": weight,
            "priority": priority,
            "rpm": rpm,
            "tpm": tpm,
        }
        changes = {"model": model, **deployment, "fallbacks": route.fallbacks, "description": route.description}
        audit(actor, "route.upsert", route, changes, request_id=request_id)
    return route, changed


@transaction.atomic
def route_set(
    *,
    model: str,
    deployments: Sequence[DeploymentSpec],
    fallbacks: Sequence[str] = (),
    description: str | None = None,
    actor: AuditActor = None,
    request_id: str = "",
) -> tuple[Route, bool]:
    """Make a route exactly this (the declarative file): these deployments,
    the others deleted, these fallbacks, this description (None: kept, so a
    synced one survives a file without it); returns (route, changed)."""
    if not deployments:
        raise ValueError(f"route {model}: needs at least one deployment")
    keys = [(spec.provider.pk, spec.upstream_model) for spec in deployments]
    if len(set(keys)) != len(keys):
        raise ValueError(f"route {model}: the same provider and upstream_model are listed twice")
    route, changed = _route_activate(model, fallbacks, description)
    for spec in deployments:
        changed |= _deployment_put(route, spec)
    stale = [d.pk for d in route.deployments.all() if (d.provider_id, d.upstream_model) not in keys]
    if stale:
        Deployment.objects.filter(pk__in=stale).delete()
        changed = True
    if changed:
        route.save()
        changes = {"model": model, **_route_changes(deployments, fallbacks), "description": route.description}
        audit(actor, "route.set", route, changes, request_id=request_id)
    return route, changed


def _route_changes(deployments: Sequence[DeploymentSpec], fallbacks: Sequence[str]) -> dict[str, Any]:
    listed = [
        {
            "provider": d.provider.name,
            "upstream_model": d.upstream_model,
            "weight": d.weight,
            "priority": d.priority,
            "rpm": d.rpm,
            "tpm": d.tpm,
        }
        for d in deployments
    ]
    return {"deployments": listed, "fallbacks": list(fallbacks)}


def _route_activate(model: str, fallbacks: Sequence[str] | None, description: str | None = None) -> tuple[Route, bool]:
    """The route, active, with these fallbacks and description (None:
    unchanged); not saved yet."""
    if fallbacks is not None:
        fallbacks_check(model, fallbacks)
    route = Route.objects.select_for_update().filter(model=model).first() or Route(model=model)
    if route.pk is None and Router.objects.filter(name=model).exists():
        raise ValueError(f"route {model}: a smart router of that name exists and is asked first")
    if route.pk is None and Augmentor.objects.filter(name=model).exists():
        raise ValueError(f"route {model}: an augmentor of that name exists and is asked first")
    changed = route.pk is None or not route.is_active
    if fallbacks is not None and list(fallbacks) != route.fallbacks:
        route.fallbacks, changed = list(fallbacks), True
    if description is not None and description != route.description:
        route.description, changed = description, True
    route.is_active = True
    if route.pk is None:
        route.save()
    return route, changed


def fallbacks_check(model: str, fallbacks: Sequence[str]) -> None:
    """What can be checked before loading: names, not oneself, no repeats.
    Cycles through other routes are dropped when the catalog loads."""
    for name in fallbacks:
        if not isinstance(name, str) or not name or name.endswith("*"):
            raise ValueError(f"route {model}: fallback {name!r} is not a model name")
        if name == model:
            raise ValueError(f"route {model}: cannot fall back to itself")
    if len(set(fallbacks)) != len(fallbacks):
        raise ValueError(f"route {model}: a fallback is listed twice")


def _deployment_put(route: Route, spec: DeploymentSpec) -> bool:
    if spec.weight < 1:
        raise ValueError(f"route {route.model}: weight must be at least 1")
    for name, limit in (("rpm", spec.rpm), ("tpm", spec.tpm)):
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError(f"route {route.model}: {name} must be a whole number of at least 1 (or none)")
    deployment = route.deployments.filter(provider=spec.provider, upstream_model=spec.upstream_model).first()
    if deployment is None:
        Deployment.objects.create(
            route=route,
            provider=spec.provider,
            upstream_model=spec.upstream_model,
            weight=spec.weight,
            priority=spec.priority,
            rpm=spec.rpm,
            tpm=spec.tpm,
        )
        return True
    wanted = (spec.weight, spec.priority, spec.rpm, spec.tpm, True)
    if (deployment.weight, deployment.priority, deployment.rpm, deployment.tpm, deployment.is_active) == wanted:
        return False
    deployment.weight, deployment.priority, deployment.rpm, deployment.tpm = wanted[:4]
    deployment.is_active = True
    deployment.save()
    return True


_NAME_MAX = ModelAlias._meta.get_field("pattern").max_length or 200


def alias_check(pattern: str, target: str, *, alias_id: int | None = None) -> None:
    """Refuse what would never resolve as written: a target that is not a
    concrete route name, an alias of itself, a name an existing route already
    answers (the route would always win), chains (aliases never lead to
    other aliases) and a target no active route answers (the catalog would
    ignore the alias and the name would be a 404). `alias_id`:
    the alias being edited (its row is not one of the others)."""
    for name in (pattern, target):
        if not isinstance(name, str) or not name.strip() or name != name.strip() or len(name) > _NAME_MAX:
            raise ValueError(f"alias {pattern!r}: {name!r} is not a model name (1 to {_NAME_MAX} characters)")
    if is_alias_pattern(target):
        raise ValueError(f"alias {pattern}: the target {target!r} must be a concrete route name, not a pattern")
    if pattern == target:
        raise ValueError(f"alias {pattern}: cannot point at itself")
    if Route.objects.filter(model=pattern).exists():
        raise ValueError(f"alias {pattern}: a route of that name exists and would always win")
    if Router.objects.filter(name=pattern).exists():
        raise ValueError(f"alias {pattern}: a smart router of that name exists and is asked first")
    if Augmentor.objects.filter(name=pattern).exists():
        raise ValueError(f"alias {pattern}: an augmentor of that name exists and is asked first")
    others = ModelAlias.objects.exclude(pattern=pattern)
    if alias_id is not None:
        others = others.exclude(pk=alias_id)
    if others.filter(pattern=target).exists():
        raise ValueError(f"alias {pattern}: {target!r} is itself an alias; aliases do not chain")
    pointing = others.filter(target_model=pattern).values_list("pattern", flat=True).first()
    if pointing is not None:
        raise ValueError(f"alias {pattern}: the alias {pointing!r} points at {pattern!r}; aliases do not chain")
    if not Route.objects.filter(model=target, is_active=True).exists():
        raise ValueError(
            f"alias {pattern}: no active route named {target!r}, so the alias would answer 404; create the route "
            f"first (manage.py route_create {target} --provider NAME, or list it under routes: in the "
            "gateway_apply file), or point the alias at an existing route"
        )


@transaction.atomic
def alias_upsert(
    *,
    pattern: str,
    target: str,
    priority: int = 0,
    note: str | None = None,
    actor: AuditActor = None,
    request_id: str = "",
) -> tuple[ModelAlias, bool]:
    """Create or update (and activate) the alias `pattern` -> route `target`;
    returns (alias, changed). `note` None keeps the alias's note. A change is audited."""
    alias_check(pattern, target)
    if isinstance(priority, bool) or not isinstance(priority, int) or not -32768 <= priority <= 32767:
        raise ValueError(f"alias {pattern}: priority must be a whole number from -32768 to 32767")
    alias = ModelAlias.objects.select_for_update().filter(pattern=pattern).first() or ModelAlias(pattern=pattern)
    before = (alias.target_model, alias.priority, alias.note, alias.is_active)
    alias.target_model, alias.priority, alias.is_active = target, priority, True
    if note is not None:
        alias.note = note
    changed = alias.pk is None or before != (alias.target_model, alias.priority, alias.note, alias.is_active)
    if changed:
        alias.save()  # also tells every process to reload its catalog
        changes = {"pattern": pattern, "target": target, "priority": priority, "note": alias.note}
        audit(actor, "alias.upsert", alias, changes, request_id=request_id)
    return alias, changed


@transaction.atomic
def alias_delete(*, pattern: str, actor: AuditActor = None, request_id: str = "") -> bool:
    """Remove the alias; False when there was none."""
    return _aliases_remove(ModelAlias.objects.filter(pattern=pattern), actor, request_id) > 0


@transaction.atomic
def aliases_prune(*, keep: Sequence[str], actor: AuditActor = None, request_id: str = "") -> int:
    """Remove every alias not named in `keep` (the declarative file); returns how many."""
    return _aliases_remove(ModelAlias.objects.exclude(pattern__in=list(keep)), actor, request_id)


def _aliases_remove(aliases: QuerySet[ModelAlias], actor: AuditActor, request_id: str) -> int:
    removed = list(aliases.select_for_update())
    for alias in removed:
        changes = {"pattern": alias.pattern, "target": alias.target_model}
        audit(actor, "alias.delete", alias, changes, request_id=request_id)
    ModelAlias.objects.filter(pk__in=[alias.pk for alias in removed]).delete()
    return len(removed)


@dataclass(frozen=True, slots=True)
class ConnectionCheck:
    reachable: bool
    status: int | None  # None: no HTTP answer
    latency_ms: int
    detail: str  # what went wrong, never the credential


def provider_connection_test(provider: Provider, *, timeout: float = 10.0) -> ConnectionCheck:
    """GET {base_url}/models with the provider's credential. Any answer other
    than 401/403 or a 5xx means the gateway can reach it and is let in (a 404
    from a provider without /models still proves the route works)."""
    request = urllib.request.Request(provider.base_url.rstrip("/") + "/models", method="GET")
    api_key = provider.resolve_api_key()
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=provider.connect_timeout or timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return ConnectionCheck(False, None, _ms_since(started), type(reason).__name__)
    latency = _ms_since(started)
    if status in (401, 403):
        return ConnectionCheck(False, status, latency, "the credential was refused")
    if status >= 500:
        return ConnectionCheck(False, status, latency, "the provider answered with a server error")
    return ConnectionCheck(True, status, latency, "")


def _ms_since(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
