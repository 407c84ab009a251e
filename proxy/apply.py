"""`gateway_apply`: providers, routes, aliases, smart routers, prices, guardrails and tenants' caches from one file.

The whole file is checked first, then applied in one transaction: either
every entry lands or none does. Applying the same file twice changes nothing.
Aliases not in the file are removed, but only when the file has `aliases:`
(routers likewise, with `routers:`, and augmentors, with `augmentors:`).
Guardrails not in the file are kept (removing a security rule takes admin or
an explicit `enabled: false`); a guardrail's `tenants:`, when given, are
exactly the tenants it applies to.
`tenants:` sets the listed tenants' response and semantic cache settings
(proxy.apply_tenants); tenants not listed are left alone.
Every change leaves an audit entry (accounts.audit) naming who applied it.
"""

from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from django.db import transaction

from accounts.audit import AuditActor, audit, changes_between, credential_changes
from accounts.models import Tenant
from billing.media_pricing import MEDIA_RATE_CAPS
from billing.services import PRICE_RATE_OPTIONS, price_set
from gateway.kernel import cli
from proxy.apply_augmentors import augmentors_apply
from proxy.apply_tenants import tenants_apply
from proxy.catalog_loader import catalog_load
from proxy.guardrails.services import guardrail_tenants_set, guardrail_upsert
from proxy.models import Provider
from proxy.router_services import router_upsert, routers_prune
from proxy.services import TIMEOUT_FIELDS, DeploymentSpec, alias_upsert, aliases_prune, provider_upsert, route_set


class ApplyError(Exception):
    """The file is invalid; nothing was applied."""


def _entries(doc: dict[str, Any], section: str, required: tuple[str, ...]) -> list[dict[str, Any]]:
    items = doc.get(section) or []
    if not isinstance(items, list):
        raise ApplyError(f"'{section}' must be a list")
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ApplyError(f"{section}[{index}] must be a mapping")
        missing = [field for field in required if not item.get(field)]
        if missing:
            raise ApplyError(f"{section}[{index}] is missing {', '.join(missing)}")
    return items


def config_load(path: Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ApplyError(f"cannot read {path}: {exc}") from None
    if not isinstance(doc, dict):
        raise ApplyError("the file must be a mapping with providers, routes, aliases, prices and guardrails")
    unknown = set(doc) - {"providers", "routes", "aliases", "routers", "augmentors", "prices", "guardrails", "tenants"}
    if unknown:
        raise ApplyError(f"unknown sections: {', '.join(sorted(unknown))}")
    return doc


@transaction.atomic
def config_apply(doc: dict[str, Any], *, actor: AuditActor = None) -> Counter[str]:
    """Apply a loaded file; returns counts such as {'provider saved': 1}."""
    counts: Counter[str] = Counter()
    for item in _entries(doc, "providers", ("name", "base_url")):
        counts["provider " + ("saved" if _apply_provider(item, actor) else "unchanged")] += 1
    for item in _entries(doc, "routes", ("model",)):
        try:
            _, changed = route_set(
                model=item["model"],
                deployments=_deployments(item),
                fallbacks=_names(item, "fallbacks"),
                description=_description(item),
                actor=actor,
            )
        except ValueError as exc:
            raise ApplyError(str(exc)) from None
        counts["route " + ("saved" if changed else "unchanged")] += 1
    if "aliases" in doc:
        counts += _apply_aliases(_entries(doc, "aliases", ("pattern", "to")), actor)
    if "augmentors" in doc:  # before the routers, whose candidates may be augmentors
        try:
            counts += augmentors_apply(_entries(doc, "augmentors", ("name", "designator", "target")), actor)
        except ValueError as exc:
            raise ApplyError(str(exc)) from None
    if "routers" in doc:
        counts += _apply_routers(_entries(doc, "routers", ("name", "designator", "candidates")), actor)
    for item in _entries(doc, "prices", ("model",)):
        counts["price " + ("set" if _apply_price(item, actor) else "unchanged")] += 1
    for item in _entries(doc, "guardrails", ("name", "kind", "action", "stage")):
        counts["guardrail " + ("saved" if _apply_guardrail(item, actor) else "unchanged")] += 1
    try:
        counts += tenants_apply(_entries(doc, "tenants", ("slug",)), actor)
    except ValueError as exc:
        raise ApplyError(str(exc)) from None
    return counts


_GUARDRAIL_KEYS = {"name", "kind", "pattern", "action", "stage", "enabled", "tenants"}


def _apply_guardrail(item: dict[str, Any], actor: AuditActor) -> bool:
    name = str(item["name"])
    unknown = set(item) - _GUARDRAIL_KEYS
    if unknown:
        raise ApplyError(f"guardrail {name}: unknown fields {', '.join(sorted(unknown))}")
    enabled = item.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ApplyError(f"guardrail {name}: enabled must be true or false")
    try:
        guardrail, outcome, _ = guardrail_upsert(
            name=name,
            kind=str(item["kind"]),
            pattern=str(item.get("pattern") or ""),
            action=str(item["action"]),
            stage=str(item["stage"]),
            enabled=enabled,
            actor=actor,
        )
    except ValueError as exc:
        raise ApplyError(f"guardrail {name}: {exc}") from None
    if "tenants" not in item:
        return outcome != "unchanged"
    slugs = item["tenants"] or []
    if not isinstance(slugs, list) or not all(isinstance(slug, str) for slug in slugs):
        raise ApplyError(f"guardrail {name}: tenants must be a list of tenant slugs")
    tenants = list(Tenant.objects.filter(slug__in=slugs))
    missing = sorted(set(slugs) - {t.slug for t in tenants})
    if missing:
        raise ApplyError(f"guardrail {name}: unknown tenants {', '.join(missing)} (create them with tenant_create)")
    return guardrail_tenants_set(guardrail, tenants, actor=actor) or outcome != "unchanged"


_WATCHED = ("kind", "base_url", "api_key_env", *TIMEOUT_FIELDS)


def _apply_provider(item: dict[str, Any], actor: AuditActor) -> bool:
    if item.get("api_key") and item.get("api_key_env"):
        raise ApplyError(f"provider {item['name']}: set api_key or api_key_env, not both")
    try:
        _, changed = provider_save(
            name=item["name"],
            kind=item.get("kind", "openai"),
            base_url=item["base_url"],
            api_key=item.get("api_key"),
            api_key_env=item.get("api_key_env", "" if item.get("api_key") is None else None),
            timeouts={field: _seconds(item, field) for field in TIMEOUT_FIELDS},
            actor=actor,
        )
    except ValueError as exc:
        raise ApplyError(f"provider {item['name']}: {exc}") from None
    return changed


def provider_save(*, actor: AuditActor, **fields: Any) -> tuple[Provider, bool]:
    """proxy.services.provider_upsert, audited as the API and admin audit it (for
    gateway_apply and provider_create): where requests go, and that a credential
    was set, never its value."""
    existing = Provider.objects.filter(name=fields["name"]).first()
    before = {name: getattr(existing, name) for name in _WATCHED} if existing is not None else None
    stored_before = existing.api_key_encrypted if existing is not None else ""
    with transaction.atomic():
        provider, changed = provider_upsert(**fields)
        if changed:
            after = {name: getattr(provider, name) for name in _WATCHED}
            changes: dict[str, Any] = after if before is None else changes_between(before, after)
            if provider.api_key_encrypted != stored_before:
                changes |= credential_changes("set" if provider.api_key_encrypted else "", None)
            audit(actor, "provider.create" if before is None else "provider.update", provider, changes)
    return provider, changed


_ALIAS_KEYS = {"pattern", "to", "priority", "note"}


def _apply_aliases(items: list[dict[str, Any]], actor: AuditActor) -> Counter[str]:
    """The file's aliases exactly: the others removed first, so a name may
    move from one alias to another within one file."""
    counts: Counter[str] = Counter()
    patterns = [str(item["pattern"]) for item in items]
    if len(set(patterns)) != len(patterns):
        raise ApplyError("an alias pattern is listed twice")
    removed = aliases_prune(keep=patterns, actor=actor)
    if removed:
        counts["alias removed"] = removed
    for item in items:
        pattern = str(item["pattern"])
        unknown = set(item) - _ALIAS_KEYS
        if unknown:
            raise ApplyError(f"alias {pattern}: unknown fields {', '.join(sorted(unknown))}")
        try:
            _, changed = alias_upsert(
                pattern=pattern,
                target=str(item["to"]),
                priority=item.get("priority", 0),
                note=str(item.get("note") or ""),
                actor=actor,
            )
        except ValueError as exc:
            raise ApplyError(str(exc)) from None
        counts["alias " + ("saved" if changed else "unchanged")] += 1
    return counts


_ROUTER_KEYS = {"name", "designator", "candidates", "purpose", "fallback"}


def _apply_routers(items: list[dict[str, Any]], actor: AuditActor) -> Counter[str]:
    """The file's smart routers exactly, checked against the routes and
    aliases as the file left them."""
    counts: Counter[str] = Counter()
    names = [str(item["name"]) for item in items]
    if len(set(names)) != len(names):
        raise ApplyError("a router name is listed twice")
    removed = routers_prune(keep=names, actor=actor)
    if removed:
        counts["router removed"] = removed
    catalog = catalog_load() if items else None
    for item in items:
        name = str(item["name"])
        unknown = set(item) - _ROUTER_KEYS
        if unknown:
            raise ApplyError(f"router {name}: unknown fields {', '.join(sorted(unknown))}")
        candidates = item["candidates"]
        if not isinstance(candidates, list) or not all(isinstance(c, str) for c in candidates):
            raise ApplyError(f"router {name}: candidates must be a list of model names")
        try:
            _, changed = router_upsert(
                name=name,
                designator=str(item["designator"]),
                candidates=candidates,
                purpose=str(item.get("purpose") or ""),
                fallback=str(item.get("fallback") or ""),
                actor=actor,
                catalog=catalog,
            )
        except ValueError as exc:
            raise ApplyError(str(exc)) from None
        counts["router " + ("saved" if changed else "unchanged")] += 1
    return counts


def _description(item: dict[str, Any]) -> str | None:
    """A route's description; absent: kept as it is (descriptions_sync may have filled it)."""
    if "description" not in item:
        return None
    if not isinstance(item["description"], str):
        raise ApplyError(f"route {item['model']}: description must be text")
    return item["description"]


_ROUTE_KEYS = {"model", "provider", "upstream_model", "rpm", "tpm", "deployments", "fallbacks", "description"}
_DEPLOYMENT_KEYS = {"provider", "upstream_model", "weight", "priority", "rpm", "tpm"}


def _deployments(item: dict[str, Any]) -> list[DeploymentSpec]:
    """A route's `deployments:` list, or the single `provider:` form."""
    model = item["model"]
    unknown = set(item) - _ROUTE_KEYS
    if unknown:
        raise ApplyError(f"route {model}: unknown fields {', '.join(sorted(unknown))}")
    if "provider" not in item and "deployments" not in item:
        raise ApplyError(
            f"route {model}: the provider is missing; add provider: NAME (one of the providers: entries), "
            "or a deployments: list of them"
        )
    if "provider" in item and "deployments" in item:
        raise ApplyError(f"route {model}: set provider (one deployment) or deployments, not both")
    if "provider" in item and not item["provider"]:
        raise ApplyError(f"route {model}: the provider is missing; give provider: NAME (one of the providers: entries)")
    if "provider" in item:
        rpm, tpm = _limits(f"route {model}", item)
        return [DeploymentSpec(_provider(item["provider"]), str(item.get("upstream_model") or ""), rpm=rpm, tpm=tpm)]
    for name in ("upstream_model", "rpm", "tpm"):
        if name in item:
            raise ApplyError(f"route {model}: {name} belongs in each deployment")
    entries = item["deployments"]
    if not isinstance(entries, list) or not entries:
        raise ApplyError(f"route {model}: deployments must be a non-empty list")
    return [_deployment(model, index, entry) for index, entry in enumerate(entries)]


def _deployment(model: str, index: int, entry: Any) -> DeploymentSpec:
    where = f"route {model}: deployments[{index}]"
    if not isinstance(entry, dict) or not entry.get("provider"):
        raise ApplyError(f"{where} must be a mapping with a provider")
    unknown = set(entry) - _DEPLOYMENT_KEYS
    if unknown:
        raise ApplyError(f"{where}: unknown fields {', '.join(sorted(unknown))}")
    numbers = {name: entry.get(name, default) for name, default in (("weight", 1), ("priority", 0))}
    for name, value in numbers.items():
        if not isinstance(value, int) or isinstance(value, bool):
            raise ApplyError(f"{where}: {name} must be a whole number")
    rpm, tpm = _limits(where, entry)
    upstream_model = str(entry.get("upstream_model") or "")
    return DeploymentSpec(_provider(entry["provider"]), upstream_model, **numbers, rpm=rpm, tpm=tpm)


def _limits(where: str, entry: dict[str, Any]) -> tuple[int | None, int | None]:
    """A deployment's upstream limits (rpm, tpm); absent: none."""
    for name in ("rpm", "tpm"):
        value = entry.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ApplyError(f"{where}: {name} must be a whole number of at least 1")
    return entry.get("rpm"), entry.get("tpm")


def _names(item: dict[str, Any], field: str) -> list[str]:
    names = item.get(field) or []
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ApplyError(f"route {item['model']}: {field} must be a list of model names")
    return names


def _seconds(item: dict[str, Any], field: str) -> float | None:
    """A provider's timeout; absent: the setting's default (the file says all)."""
    value = item.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ApplyError(f"provider {item['name']}: {field} must be a number of seconds above 0")
    return float(value)


_PRICE_KEYS = {
    "model",
    "provider",
    "input",
    "output",
    "cached_input",
    "long_context_threshold",
    "request_fee",
    "max_output_tokens",
    *PRICE_RATE_OPTIONS,
}


def _apply_price(item: dict[str, Any], actor: AuditActor) -> bool:
    unknown = set(item) - _PRICE_KEYS
    if unknown:
        raise ApplyError(f"price {item['model']}: unknown fields {', '.join(sorted(unknown))}")
    try:
        optional: dict[str, Any] = {
            field: cli.usd(item[name]) for name, field in PRICE_RATE_OPTIONS.items() if item.get(name) is not None
        }
        if item.get("request_fee") is not None:
            optional["request_fee_usd"] = cli.usd(item["request_fee"])
        for name in ("long_context_threshold", "max_output_tokens"):
            if item.get(name) is not None:
                optional[name] = int(item[name])
        # A media price (per second, character or image) may leave the token rates out: they are 0 then.
        tokens_optional = any(field in optional for field in MEDIA_RATE_CAPS)
        price, changed = price_set(
            model=item["model"],
            input_usd=cli.usd(item["input"] if "input" in item or not tokens_optional else 0),
            output_usd=cli.usd(item["output"] if "output" in item or not tokens_optional else 0),
            cached_input_usd=cli.usd(item["cached_input"]) if item.get("cached_input") is not None else None,
            provider=_provider(item["provider"]) if item.get("provider") else None,
            **optional,
        )
    except KeyError as exc:
        raise ApplyError(f"price {item['model']}: missing {exc.args[0]}") from None
    except Exception as exc:  # CommandError from cli.usd, ValueError from price_set
        raise ApplyError(f"price {item['model']}: {exc}") from None
    if changed:
        audit(actor, "price.set", price, {key: str(value) for key, value in item.items()})
    return changed


def _provider(name: str) -> Provider:
    provider = Provider.objects.filter(name=name).first()
    if provider is None:
        raise ApplyError(f"unknown provider {name!r} (declare it under providers)")
    return provider
