"""The request path's view of keys and tenants: memory first, database once.

`tenant_context_for_key` digests the presented key and looks it up in a
process-local dict of frozen `TenantContext`s. A miss makes exactly one
indexed query and fills the dict; unknown keys are remembered briefly so a
client retrying with a bad key cannot turn each retry into a query.

Any change to tenants, keys, providers, routes or prices bumps
`ConfigVersion`; this process drops its snapshots at once (signal), and every
other process within `GATEWAY_CONFIG_POLL_SECONDS` (`config_watch`).
"""

import asyncio
import logging
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Protocol

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import QuerySet

from accounts.keys import key_digest
from accounts.models import ApiKey, ConfigVersion
from gateway.kernel.context import RateLimits, SemanticCacheSettings, TenantContext
from gateway.kernel.errors import backend_unavailable

log = logging.getLogger(__name__)

_by_digest: dict[str, TenantContext] = {}
_unknown_until: dict[str, float] = {}
_UNKNOWN_MAX = 10_000  # bound the negative cache against key-guessing floods
_generation = 0  # bumped on invalidation; a load that raced one is not kept
_invalidators: list[Callable[[], None]] = []


class ContextPart(Protocol):
    """What a layer above accounts adds to a caller's context when its key
    loads (billing: budgets, their spend and prepaid credit). Registered from
    that app's ready(), so accounts imports nothing above it."""

    def annotate(self, keys: QuerySet[ApiKey]) -> QuerySet[ApiKey]:
        """The key query, with what `fields` will read (in the same query)."""

    def fields(self, key: ApiKey) -> dict[str, Any]:
        """TenantContext fields for the loaded key."""


_context_parts: list[ContextPart] = []


def context_part_register(part: ContextPart) -> None:
    if part not in _context_parts:
        _context_parts.append(part)


def on_invalidate(fn: Callable[[], None]) -> Callable[[], None]:
    """Register another snapshot (routes, prices) to drop on config changes."""
    _invalidators.append(fn)
    return fn


def invalidate_all() -> None:
    global _generation
    _generation += 1
    _by_digest.clear()
    _unknown_until.clear()
    for fn in _invalidators:
        fn()


async def tenant_context_for_key(plaintext: str) -> TenantContext | None:
    """The live key's context, or None for an unknown or revoked key."""
    digest = key_digest(plaintext)
    ctx = _by_digest.get(digest)
    if ctx is not None:
        return ctx
    until = _unknown_until.get(digest)
    if until is not None and until > time.monotonic():
        return None
    generation = _generation
    try:
        # A hung database never answers: the request gets its 503 at the
        # deadline (the load finishes in its thread once the database does).
        ctx = await asyncio.wait_for(sync_to_async(_load)(digest), settings.DATABASE_LOAD_TIMEOUT_SECONDS)
    except (DatabaseError, TimeoutError):
        log.warning("a key could not be loaded: the database is unavailable", exc_info=True)
        raise backend_unavailable("database") from None
    if generation == _generation:
        if ctx is None:
            if len(_unknown_until) >= _UNKNOWN_MAX:
                _unknown_until.clear()
            _unknown_until[digest] = time.monotonic() + settings.ACCOUNTS_NEGATIVE_CACHE_SECONDS
        else:
            _by_digest[digest] = ctx
    return ctx


def _load(digest: str) -> TenantContext | None:
    try:
        keys: QuerySet[ApiKey] = ApiKey.objects.live().for_digest(digest)
        for part in _context_parts:
            keys = part.annotate(keys)
        key = keys.first()
        return None if key is None else context_from_key(key)
    finally:
        _release_connection()


def context_from_key(key: ApiKey) -> TenantContext:
    tenant = key.tenant
    return TenantContext(
        tenant_id=tenant.pk,
        tenant_slug=tenant.slug,
        tenant_active=tenant.is_active,
        key_id=key.pk,
        key_prefix=key.prefix,
        allowed_models=tuple(key.allowed_models) if key.allowed_models else None,
        expires_at=key.expires_at,
        tags=tuple(key.tags or ()),
        cache_ttl_seconds=(key.cache_ttl_seconds if key.cache_ttl_seconds is not None else tenant.cache_ttl_seconds)
        or 0,
        key_limits=RateLimits(key.rpm_limit, key.tpm_limit, key.max_parallel),
        tenant_limits=RateLimits(tenant.rpm_limit, tenant.tpm_limit, tenant.max_parallel),
        trace_sample_rate=trace_sample_rate(key.trace_sample_rate, tenant.trace_sample_rate),
        semantic=semantic_cache_settings(key),
        **{name: value for part in _context_parts for name, value in part.fields(key).items()},
    )


def semantic_cache_settings(key: ApiKey) -> SemanticCacheSettings | None:
    """The key's semantic cache: each setting the key's own when set, else
    its tenant's; None (off) when neither sets a threshold."""
    tenant = key.tenant

    def own(name: str) -> Any:
        value = getattr(key, name)
        return getattr(tenant, name) if value is None or value == "" else value

    threshold = own("semantic_threshold")
    if threshold is None:
        return None
    return SemanticCacheSettings(
        threshold=min(max(float(threshold), 0.0), 1.0),
        scope=own("semantic_scope"),
        include_system=own("semantic_include_system"),
        min_answer_tokens=own("semantic_min_answer_tokens"),
        max_answer_tokens=own("semantic_max_answer_tokens"),
        ttl_seconds=own("semantic_ttl_seconds"),
        embedding_model=tenant.semantic_embedding_model,
    )


def trace_sample_rate(key_rate: Decimal | None, tenant_rate: Decimal | None) -> float:
    """The key's rate when set (0 included: a key can opt out of its
    tenant's tracing), else the tenant's; clamped to 0..1. A float: it is
    only ever compared with random()."""
    rate = key_rate if key_rate is not None else tenant_rate
    return min(max(float(rate or 0), 0.0), 1.0)


def _release_connection() -> None:
    # A streaming response would otherwise hold this thread's (pooled)
    # connection until the stream ends. Inside a test's transaction the
    # connection is the test's own, so leave it alone there.
    if not connection.in_atomic_block:
        connection.close()


def config_version_read() -> int:
    try:
        return ConfigVersion.objects.values_list("version", flat=True).get(pk=1)
    except ConfigVersion.DoesNotExist:
        return 0
    finally:
        _release_connection()


async def config_watch() -> None:
    """Poll the shared config version forever; drop snapshots when it moves."""
    seen: int | None = None
    while True:
        try:
            version = await sync_to_async(config_version_read, thread_sensitive=False)()
        except Exception:  # the database may be restarting: keep serving from memory
            log.warning("config version poll failed", exc_info=True)
        else:
            if version != seen:
                # Also on the first poll: an edit may have landed between this
                # process filling a snapshot and starting to watch.
                if seen is not None:
                    log.info("configuration changed (version %s); snapshots dropped", version)
                invalidate_all()
                seen = version
        await asyncio.sleep(settings.GATEWAY_CONFIG_POLL_SECONDS)
