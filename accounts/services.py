"""Writes for tenants and keys."""

import datetime as dt
from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.utils import timezone

from accounts.keys import key_digest, key_display_prefix, key_generate
from accounts.models import ApiKey, Tenant


@transaction.atomic
def tenant_create(*, slug: str, name: str = "", **settings: Any) -> Tenant:
    """`settings`: is_prepaid, cache_ttl_seconds, rpm_limit, tpm_limit, max_parallel."""
    return Tenant.objects.create(slug=slug, name=name or slug, **settings)


@transaction.atomic
def api_key_issue(
    *,
    tenant: Tenant,
    name: str = "",
    allowed_models: Iterable[str] | None = None,
    expires_at: dt.datetime | None = None,
    tags: Iterable[str] = (),
    **settings: Any,
) -> tuple[str, ApiKey]:
    """Create a key and return its plaintext, which is never retrievable again.

    `settings`: cache_ttl_seconds, rpm_limit, tpm_limit, max_parallel.
    """
    plaintext = key_generate()
    models = [m for m in (allowed_models or ()) if m]
    api_key = ApiKey.objects.create(
        tenant=tenant,
        name=name,
        prefix=key_display_prefix(plaintext),
        digest=key_digest(plaintext),
        allowed_models=models or None,
        tags=[t for t in tags if t],
        expires_at=expires_at,
        **settings,
    )
    return plaintext, api_key


@transaction.atomic
def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    """Revoke a key; every process stops accepting it within seconds."""
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at", "updated_at"])
    return api_key
