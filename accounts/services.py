"""Writes for tenants and keys. Each one leaves its audit entry (accounts.audit).

`actor` says who made the write (a user, an `Actor` with its token, or a
label such as "manage.py key_create"); `request_id` ties the entry to the
API request that made it. Both are optional so that no caller can forget the
entry: without them it is recorded as made by "system".
"""

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from django.db import transaction
from django.utils import timezone

from accounts.audit import AuditActor, audit, changes_between
from accounts.keys import key_digest, key_display_prefix, key_generate
from accounts.models import ApiKey, Tenant
from accounts.signals import api_key_rotated

LIMIT_FIELDS = ("rpm_limit", "tpm_limit", "max_parallel")
LIMIT_FLAGS = {"rpm_limit": "--rpm", "tpm_limit": "--tpm", "max_parallel": "--max-parallel"}  # the commands' names
SEMANTIC_FIELDS = (
    "semantic_threshold",
    "semantic_scope",
    "semantic_include_system",
    "semantic_min_answer_tokens",
    "semantic_max_answer_tokens",
    "semantic_ttl_seconds",
)
TENANT_SETTINGS = (
    "name",
    "is_prepaid",
    "cache_ttl_seconds",
    *LIMIT_FIELDS,
    "trace_sample_rate",
    *SEMANTIC_FIELDS,
    "semantic_embedding_model",
)
# What a key's row holds that is not one of its settings: a rotated key gets fresh ones.
_KEY_IDENTITY = frozenset({"id", "tenant", "prefix", "digest", "revoked_at", "created_at", "updated_at"})


def limits_check(values: Mapping[str, Any], labels: Mapping[str, str] | None = None) -> None:
    """Refuse a rate limit that could never be met: 0 (or less) would refuse every request.
    `labels`: what the caller calls each field (a command: "--rpm")."""
    for name in LIMIT_FIELDS:
        value = values.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(
                f"{(labels or {}).get(name, name)} must be a whole number of at least 1 ({value!r} would refuse "
                "every request); leave it out for no limit"
            )


@transaction.atomic
def tenant_create(
    *, slug: str, name: str = "", actor: AuditActor = None, request_id: str = "", **settings: Any
) -> Tenant:
    """`settings`: is_prepaid, cache_ttl_seconds, rpm_limit, tpm_limit, max_parallel."""
    limits_check(settings)
    tenant = Tenant.objects.create(slug=slug, name=name or slug, **settings)
    audit(actor, "tenant.create", tenant, {"slug": slug, "name": tenant.name, **settings}, request_id=request_id)
    return tenant


@transaction.atomic
def tenant_update(
    *, tenant: Tenant, actor: AuditActor = None, request_id: str = "", **values: Any
) -> dict[str, list[Any]]:
    """Set `values` (of TENANT_SETTINGS and is_active) on the tenant; returns {field: [old, new]} of what changed."""
    limits_check(values)
    unknown = set(values) - {*TENANT_SETTINGS, "is_active"}
    if unknown:
        raise ValueError(f"unknown tenant settings: {', '.join(sorted(unknown))}")
    changes = changes_between({name: getattr(tenant, name) for name in values}, values)
    if changes:
        for name, (_, new) in changes.items():
            setattr(tenant, name, new)
        tenant.save()  # the post_save signal tells every process to reload
        audit(actor, "tenant.update", tenant, changes, request_id=request_id)
    return changes


@transaction.atomic
def api_key_issue(
    *,
    tenant: Tenant,
    name: str = "",
    allowed_models: Iterable[str] | None = None,
    expires_at: dt.datetime | None = None,
    tags: Iterable[str] = (),
    actor: AuditActor = None,
    request_id: str = "",
    **settings: Any,
) -> tuple[str, ApiKey]:
    """Create a key and return its plaintext, which is never retrievable again.

    `settings`: cache_ttl_seconds, rpm_limit, tpm_limit, max_parallel, trace_sample_rate.
    """
    limits_check(settings)
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
    audit(actor, "key.create", api_key, {"tenant_id": tenant.pk, **key_settings(api_key)}, request_id=request_id)
    return plaintext, api_key


@transaction.atomic
def api_key_revoke(*, api_key: ApiKey, actor: AuditActor = None, request_id: str = "", **note: Any) -> ApiKey:
    """Revoke a key; every process stops accepting it within seconds. `note`: added to the audit entry."""
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at", "updated_at"])
        audit(actor, "key.revoke", api_key, {"revoked_at": api_key.revoked_at, **note}, request_id=request_id)
    return api_key


def key_settings(api_key: ApiKey) -> dict[str, Any]:
    """Every setting of a key (limits, models, tags, tracing, expiry...): what a rotation carries over.

    Read from the model's fields, so a setting added later is carried too."""
    fields = [f for f in ApiKey._meta.concrete_fields if f.name not in _KEY_IDENTITY]
    return {field.name: getattr(api_key, field.name) for field in fields}


@transaction.atomic
def api_key_rotate(*, api_key: ApiKey, actor: AuditActor = None, request_id: str = "") -> tuple[str, ApiKey]:
    """A new key with every setting of the old one; the old one is revoked.

    `api_key_rotated` is sent in the same transaction, so the layers above
    carry what they hang on the key (billing copies its budget limits).
    Raises ValueError for a revoked key.
    """
    if api_key.is_revoked:
        raise ValueError("a revoked key cannot be rotated; create a new one")
    settings = key_settings(api_key)
    settings["tags"] = settings["tags"] or ()
    plaintext, new = api_key_issue(tenant=api_key.tenant, actor=actor, request_id=request_id, **settings)
    audit(actor, "key.rotate", new, {"replaces": api_key.pk}, request_id=request_id)
    api_key_rotated.send(sender=ApiKey, old=api_key, new=new, actor=actor, request_id=request_id)
    api_key_revoke(api_key=api_key, actor=actor, request_id=request_id, replaced_by=new.pk)
    return plaintext, new
