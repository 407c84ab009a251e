"""The routing `Catalog` the request path reads: the only place its route and
price data come from, loaded once (proxy.catalog_loader, imported when the
first load runs) and kept until the configuration changes (see
accounts.snapshots)."""

import asyncio
import weakref

from asgiref.sync import sync_to_async
from django.conf import settings

from accounts import snapshots
from gateway.kernel.errors import backend_unavailable
from proxy.routing import Catalog

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
    try:
        return await asyncio.wait_for(asyncio.shield(task), settings.DATABASE_LOAD_TIMEOUT_SECONDS)
    except TimeoutError:  # a hung database: the load goes on for the next request, this one is told
        raise backend_unavailable("database") from None


async def _load_and_keep() -> Catalog:
    global _current
    generation = _generation
    from proxy.catalog_loader import catalog_load  # the ORM, off the request path's imports

    catalog = await sync_to_async(catalog_load)()
    if generation == _generation:
        _current = catalog
    return catalog
