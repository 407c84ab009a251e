"""Loads the routing `Catalog` from the database: the only place the request
path's route and price data come from. Providers, routes and prices are
small tables, so the whole catalog is read at once (three queries) and kept
until the configuration changes (see accounts.snapshots)."""

import asyncio
import logging
import weakref

from asgiref.sync import sync_to_async
from django.db import connection
from django.utils import timezone

from accounts import snapshots
from billing.models import Price
from billing.pricing import snapshot_from_price
from proxy.context import PriceSnapshot, ProviderConfig, RouteTarget
from proxy.models import Provider, Route
from proxy.routing import Catalog, Wildcard

log = logging.getLogger(__name__)

_current: Catalog | None = None
_generation = 0
_loads: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[Catalog]]" = weakref.WeakKeyDictionary()


@snapshots.on_invalidate
def catalog_invalidate() -> None:
    global _current, _generation
    _generation += 1
    _current = None


async def current_catalog() -> Catalog:
    """The loaded catalog; concurrent first callers share one load."""
    catalog = _current
    if catalog is not None and catalog.is_current():
        return catalog
    loop = asyncio.get_running_loop()
    task = _loads.get(loop)
    if task is None or task.done():
        task = loop.create_task(_load_and_keep())
        _loads[loop] = task
    return await asyncio.shield(task)


async def _load_and_keep() -> Catalog:
    global _current
    generation = _generation
    catalog = await sync_to_async(catalog_load)()
    if generation == _generation:
        _current = catalog
    return catalog


def catalog_load() -> Catalog:
    try:
        return _build()
    finally:
        if not connection.in_atomic_block:
            connection.close()


def _build() -> Catalog:
    now = timezone.now()
    providers = {p.pk: _provider_config(p) for p in Provider.objects.filter(is_active=True)}
    prices, valid_until = _current_prices(now, {pk: cfg.name for pk, cfg in providers.items()})
    catalog = Catalog(routes={}, wildcards=(), prices=prices, valid_until=valid_until)
    routes: dict[str, RouteTarget] = {}
    wildcards: list[Wildcard] = []
    for route in Route.objects.filter(is_active=True, provider_id__in=providers.keys()):
        provider = providers[route.provider_id]
        if route.is_wildcard:
            wildcards.append(Wildcard(route.model[:-1], provider, route.upstream_model))
            continue
        upstream = route.upstream_model or route.model
        routes[route.model] = RouteTarget(
            public_model=route.model,
            provider=provider,
            upstream_model=upstream,
            price=catalog.price_for(provider.name, upstream, route.model),
        )
    wildcards.sort(key=lambda w: len(w.prefix), reverse=True)
    return Catalog(routes=routes, wildcards=tuple(wildcards), prices=prices, valid_until=valid_until)


def _provider_config(provider: Provider) -> ProviderConfig:
    try:
        api_key = provider.resolve_api_key()
    except Exception:
        # One unreadable credential must not take every route down.
        log.error("provider %s: stored credential cannot be decrypted", provider.name)
        api_key = ""
    return ProviderConfig(name=provider.name, kind=provider.kind, base_url=provider.base_url, api_key=api_key)


def _current_prices(
    now: "timezone.datetime", provider_names: dict[int, str]
) -> tuple[dict[tuple[str, str], PriceSnapshot], float]:
    """The price in force now for each (provider, model), and when the next
    scheduled price takes effect (the catalog reloads itself then)."""
    prices: dict[tuple[str, str], PriceSnapshot] = {}
    valid_until = float("inf")
    for row in Price.objects.order_by("model", "provider_id", "-effective_from", "-id"):
        if row.effective_from > now:
            valid_until = min(valid_until, row.effective_from.timestamp())
            continue
        if row.provider_id is not None and row.provider_id not in provider_names:
            continue
        key = (provider_names.get(row.provider_id, "") if row.provider_id else "", row.model)
        if key not in prices:  # rows come newest first
            prices[key] = snapshot_from_price(row)
    return prices, valid_until
