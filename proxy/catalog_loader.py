"""Reads the routing `Catalog` from the database. Providers, deployments
(with their routes), prices, aliases, smart routers and augmentors are small
tables, so the whole catalog is read at once (seven queries with the
guardrails, two more when any is enabled); proxy.catalog keeps it."""

import dataclasses
import datetime as dt
import logging
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone

from billing.media_pricing import with_image_variants
from billing.models import Price
from billing.pricing import snapshot_from_price
from gateway.kernel.context import PriceSnapshot, ProviderConfig, RoutePlan, RouteTarget
from gateway.kernel.errors import backend_unavailable
from proxy.guardrails.index import EMPTY_INDEX, GuardrailIndex, GuardrailRow, guardrail_index
from proxy.models import Augmentor as AugmentorRow
from proxy.models import Deployment, Guardrail, ModelAlias, Provider, Router, is_alias_pattern
from proxy.routing import AliasPattern, Augmentor, Candidate, Catalog, SmartRouter, Wildcard

log = logging.getLogger(__name__)


def catalog_load() -> Catalog:
    """The catalog as the database has it now; a cut or hung database is a
    quick 503 backend_unavailable for the request that waited on the load."""
    try:
        return _build()
    except DatabaseError:
        log.warning("the catalog could not be loaded: the database is unavailable", exc_info=True)
        raise backend_unavailable("database") from None
    finally:
        if not connection.in_atomic_block:
            connection.close()


def _build() -> Catalog:
    now = timezone.now()
    providers = {p.pk: _provider_config(p) for p in Provider.objects.filter(is_active=True)}
    prices, valid_until = _current_prices(now, {pk: cfg.name for pk, cfg in providers.items()})
    pricing = Catalog(routes={}, wildcards=(), prices=prices, valid_until=valid_until)
    deployments: dict[str, list[RouteTarget]] = {}
    direct_fallbacks: dict[str, list[str]] = {}
    descriptions: dict[str, str] = {}
    rows = (
        Deployment.objects.filter(is_active=True, route__is_active=True, provider_id__in=providers.keys())
        .select_related("route")
        .order_by("route__model", "priority", "id")
    )
    for row in rows:
        route, provider = row.route, providers[row.provider_id]
        direct_fallbacks[route.model] = list(route.fallbacks or [])
        descriptions[route.model] = route.description
        # A wildcard's upstream_model is a prefix; the name completes it per request.
        upstream = row.upstream_model if route.is_wildcard else row.upstream_model or route.model
        price = None if route.is_wildcard else pricing.price_for(provider.name, upstream, route.model)
        deployments.setdefault(route.model, []).append(
            RouteTarget(
                public_model=route.model,
                provider=provider,
                upstream_model=upstream,
                price=price,
                deployment_id=row.pk,
                weight=row.weight,
                priority=row.priority,
                rpm=row.rpm,
                tpm=row.tpm,
            )
        )
    chains = _FallbackChains(direct_fallbacks)
    routes: dict[str, RoutePlan] = {}
    wildcards: list[Wildcard] = []
    for model, targets in deployments.items():
        plan = RoutePlan(public_model=model, deployments=tuple(targets), fallbacks=chains.chain(model))
        if model.endswith("*"):
            wildcards.append(Wildcard(prefix=model[:-1], plan=plan))
        else:
            routes[model] = plan
    wildcards.sort(key=lambda w: len(w.prefix), reverse=True)
    aliases, patterns = _aliases(routes)
    # Read at each load, so a changed setting takes effect with the next one.
    prefix = {cfg.name: cfg for cfg in providers.values()} if settings.PROXY_PROVIDER_PREFIX_ROUTING else {}
    catalog = Catalog(
        routes=routes,
        wildcards=tuple(wildcards),
        prices=prices,
        valid_until=valid_until,
        aliases=aliases,
        alias_patterns=patterns,
        prefix_providers=prefix,
        guardrails=_guardrails(),
    )
    # Augmentors first: a router's candidate may be one.
    catalog = dataclasses.replace(catalog, augmentors=_augmentors(catalog))
    return dataclasses.replace(catalog, routers=_routers(catalog, descriptions))


def _augmentors(catalog: Catalog) -> dict[str, Augmentor]:
    """The active augmentors whose target the catalog serves (one query).
    An augmentor's name is asked before aliases, wildcard routes and
    provider prefixes (proxy.pipeline.route), so it hides a route or alias of
    the same name, which the commands refuse to create."""
    augmentors: dict[str, Augmentor] = {}
    for row in AugmentorRow.objects.filter(is_active=True):
        if row.name in catalog.routes or row.name in catalog.aliases:
            log.warning("augmentor %s: hides the route or alias of the same name", row.name)
        if catalog.lookup(row.target) is None:
            log.warning("augmentor %s: target %r is not a served model; ignored", row.name, row.target)
            continue
        augmentors[row.name] = Augmentor(
            row.name,
            row.designator,
            row.target,
            row.search_provider,
            row.max_search_results,
            row.max_scrape_urls,
            row.max_context_tokens,
            row.purpose,
        )
    return augmentors


def _guardrails() -> GuardrailIndex:
    """The enabled guardrails and whom they apply to (one query, three when any is enabled)."""
    rows = [
        GuardrailRow(g.pk, g.name, g.kind, g.pattern, g.action, g.stage) for g in Guardrail.objects.filter(enabled=True)
    ]
    if not rows:
        return EMPTY_INDEX
    ids = [row.id for row in rows]
    tenants = Guardrail.tenants.through.objects.filter(guardrail_id__in=ids).values_list("guardrail_id", "tenant_id")
    keys = Guardrail.api_keys.through.objects.filter(guardrail_id__in=ids).values_list("guardrail_id", "apikey_id")
    return guardrail_index(rows, tenants, keys)


def _routers(catalog: Catalog, descriptions: dict[str, str]) -> dict[str, SmartRouter]:
    """The active smart routers, each with the candidates the catalog
    resolves (and their routes' descriptions); a router left with none is
    kept out with a log line. A router's name is asked before any other
    (proxy.pipeline.route), so it hides a route or alias of the same name,
    which the commands refuse to create."""
    routers: dict[str, SmartRouter] = {}
    for row in Router.objects.filter(is_active=True):
        if row.name in catalog.routes or row.name in catalog.aliases:
            log.warning("router %s: hides the route or alias of the same name", row.name)
        candidates = []
        for name in row.candidates or []:
            augmentor = catalog.augmentors.get(name)
            if augmentor is not None:  # described by its purpose, else by its target's route
                target = catalog.lookup(augmentor.target)
                alias_of = None if target is None else target.alias_of
                text = augmentor.purpose or _description(catalog, descriptions, augmentor.target, alias_of)
                candidates.append(Candidate(name, text))
                continue
            found = catalog.lookup(name)
            if found is None:
                log.warning("router %s: candidate %r is not a served model; left out", row.name, name)
            else:
                candidates.append(Candidate(name, _description(catalog, descriptions, name, found.alias_of)))
        if not candidates:
            log.warning("router %s: no candidate is a served model; ignored", row.name)
            continue
        names = [c.name for c in candidates]
        fallback = row.fallback if row.fallback in names else names[0]
        routers[row.name] = SmartRouter(row.name, row.designator, tuple(candidates), fallback, row.purpose)
    return routers


def _description(catalog: Catalog, descriptions: dict[str, str], name: str, alias_of: str | None) -> str:
    """The description of the route that serves `name`: itself, an alias's
    target, or the wildcard route it matches (a provider prefix has none)."""
    route = alias_of or name
    if route in catalog.routes:
        return descriptions.get(route, "")
    for wildcard in catalog.wildcards:
        if name.startswith(wildcard.prefix):
            return descriptions.get(wildcard.prefix + "*", "")
    return ""


def _aliases(routes: dict[str, RoutePlan]) -> tuple[dict[str, str], tuple[AliasPattern, ...]]:
    """The active aliases whose target is a served route; the others are
    left out with a log line (a request for them is a 404, never a 500)."""
    exact: dict[str, str] = {}
    patterns: list[AliasPattern] = []
    for row in ModelAlias.objects.filter(is_active=True).order_by("priority", "pattern"):
        if row.target_model not in routes:
            log.warning("alias %s: target %r is not a served route; ignored", row.pattern, row.target_model)
        elif row.pattern in routes:
            log.warning("alias %s: a route has the same name and wins; ignored", row.pattern)
        elif is_alias_pattern(row.pattern):
            patterns.append(AliasPattern(row.pattern, row.target_model, row.priority))
        else:
            exact[row.pattern] = row.target_model
    return exact, tuple(patterns)


class _FallbackChains:
    """Each route's fallbacks flattened depth first: when B fails, B's own
    fallbacks come before A's next one. Names that no served route answers,
    wildcard names and cycles are left out, with a log line."""

    def __init__(self, direct: dict[str, list[str]]) -> None:
        self.direct = direct
        self.wildcards = sorted((m[:-1] for m in direct if m.endswith("*")), key=len, reverse=True)

    def fallbacks_of(self, name: str) -> list[str] | None:
        """None: no served route answers `name`."""
        if name in self.direct:
            return self.direct[name]
        for prefix in self.wildcards:
            if name.startswith(prefix) and len(name) > len(prefix):
                return self.direct[prefix + "*"]
        return None

    def chain(self, model: str) -> tuple[str, ...]:
        chain: list[str] = []
        self._visit(model, model, (model,), chain)
        return tuple(chain)

    def _visit(self, root: str, current: str, path: tuple[str, ...], chain: list[str]) -> None:
        for name in self.fallbacks_of(current) or ():
            if name == current:  # a wildcard naming a model it matches itself, seen from that model
                continue
            if name in path:
                log.warning("route %s: fallback cycle %s ignored", root, " -> ".join((*path, name)))
            elif name.endswith("*") or self.fallbacks_of(name) is None:
                log.warning("route %s: fallback %r is not a served model; ignored", root, name)
            elif name not in chain:
                chain.append(name)
                self._visit(root, name, (*path, name), chain)


def _provider_config(provider: Provider) -> ProviderConfig:
    try:
        api_key = provider.resolve_api_key()
    except Exception:
        # One unreadable credential must not take every route down.
        log.error("provider %s: stored credential cannot be decrypted", provider.name)
        api_key = ""
    return ProviderConfig(
        name=provider.name,
        kind=provider.kind,
        base_url=provider.base_url,
        api_key=api_key,
        connect_timeout=_seconds(provider.connect_timeout, settings.PROXY_CONNECT_TIMEOUT),
        first_byte_timeout=_seconds(provider.first_byte_timeout, settings.PROXY_FIRST_BYTE_TIMEOUT),
        idle_timeout=_seconds(provider.idle_timeout, settings.PROXY_IDLE_TIMEOUT),
    )


def _seconds(value: float | None, default: float) -> float:
    return float(default) if value is None else float(value)


def _current_prices(
    now: dt.datetime, provider_names: dict[int, str]
) -> tuple[dict[tuple[str, str], PriceSnapshot], float]:
    """The price in force now for each (provider, model), and when the next
    scheduled price takes effect (the catalog reloads itself then)."""
    prices: dict[tuple[str, str], PriceSnapshot] = {}
    valid_until = float("inf")
    for row in _readable_prices():
        if row.effective_from > now:
            valid_until = min(valid_until, row.effective_from.timestamp())
            continue
        if row.provider_id is not None and row.provider_id not in provider_names:
            continue
        key = (provider_names.get(row.provider_id, "") if row.provider_id else "", row.model)
        if key not in prices:  # rows come newest first
            try:
                prices[key] = snapshot_from_price(row)
            except ArithmeticError:
                log.error("price %s (%s) skipped: an amount the books cannot hold", row.pk, row.model)
    # Size/quality rows ("hd/1024-x-1024/dall-e-3") filed under their model's price.
    return with_image_variants(prices), valid_until


_PRICE_ORDER = ("model", "provider_id", "-effective_from", "-id")
_PRICES_PER_QUERY = 500


def _readable_prices() -> Iterator[Any]:
    """Every price row, newest first per model, except a row whose amounts
    the column cannot give back (stored before amounts were checked): that
    one is reported and skipped, and the older price of its model stays in
    force. One query for the ids, one per 500 rows."""
    ids = list(Price.objects.order_by(*_PRICE_ORDER).values_list("pk", flat=True))
    for start in range(0, len(ids), _PRICES_PER_QUERY):
        chunk = ids[start : start + _PRICES_PER_QUERY]
        try:
            rows = {row.pk: row for row in Price.objects.filter(pk__in=chunk)}
        except ArithmeticError:
            rows = {}
            for pk in chunk:
                try:
                    rows[pk] = Price.objects.get(pk=pk)
                except ArithmeticError:
                    log.error("price %s skipped: an amount the books cannot hold; set the model's price again", pk)
        yield from (rows[pk] for pk in chunk if pk in rows)
