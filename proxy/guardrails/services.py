"""Writes for guardrails and their attachments (commands, admin, gateway_apply)."""

from collections.abc import Sequence
from typing import Any

from django.core.validators import validate_slug
from django.db import transaction
from django.db.models.signals import m2m_changed

from accounts.audit import AuditActor, audit
from accounts.models import ApiKey, Tenant
from accounts.signals import config_version_bump, watch
from proxy.guardrails.regex import pattern_error
from proxy.guardrails.rules import ACTIONS, KINDS, STAGES
from proxy.models import Guardrail

_FIELDS = ("kind", "pattern", "action", "stage", "enabled")


def guardrails_watch() -> None:
    """Every process reloads its catalog when a guardrail or an attachment changes
    (attaching goes through the many-to-many tables, which send no post_save)."""
    watch(Guardrail)
    for through in (Guardrail.tenants.through, Guardrail.api_keys.through):
        m2m_changed.connect(_links_changed, sender=through, dispatch_uid=f"guardrail-links-{through._meta.label}")


def _links_changed(sender: Any, action: str, **kwargs: Any) -> None:
    if action in ("post_add", "post_remove", "post_clear"):
        config_version_bump()


def guardrail_check(*, name: str, kind: str, pattern: str, action: str, stage: str) -> None:
    """Raises ValueError saying what is wrong (nothing is saved)."""
    try:
        validate_slug(name)
    except Exception:
        raise ValueError(f"invalid name {name!r}: use letters, numbers, underscores or hyphens") from None
    for label, value, allowed in (("kind", kind, KINDS), ("action", action, ACTIONS), ("stage", stage, STAGES)):
        if value not in allowed:
            raise ValueError(f"unknown {label} {value!r}; expected one of {', '.join(allowed)}")
    if kind == "regex":
        error = pattern_error(pattern)
        if error is not None:
            raise ValueError(error)
    elif pattern:
        raise ValueError(f"a {kind} guardrail takes no pattern (only --kind regex does)")


@transaction.atomic
def guardrail_upsert(
    *,
    name: str,
    kind: str,
    action: str,
    stage: str,
    pattern: str = "",
    enabled: bool = True,
    actor: AuditActor = None,
) -> tuple[Guardrail, str, list[str]]:
    """Create or update the guardrail `name`: returns it, "created", "updated"
    or "unchanged", and the fields that changed. A change is audited."""
    guardrail_check(name=name, kind=kind, pattern=pattern, action=action, stage=stage)
    guardrail = Guardrail.objects.select_for_update().filter(name=name).first()
    created = guardrail is None
    if guardrail is None:
        guardrail = Guardrail(name=name)
    before = {field: getattr(guardrail, field) for field in _FIELDS}
    guardrail.kind, guardrail.pattern, guardrail.action = kind, pattern, action
    guardrail.stage, guardrail.enabled = stage, enabled
    after = {field: getattr(guardrail, field) for field in _FIELDS}
    changed = [field for field in _FIELDS if before[field] != after[field]]
    if not created and not changed:
        return guardrail, "unchanged", []
    guardrail.save()  # also tells every process to reload its catalog
    audit(actor, "guardrail.create" if created else "guardrail.update", guardrail, after)
    return guardrail, "created" if created else "updated", changed


def guardrails_named(names: Sequence[str]) -> list[Guardrail]:
    """The guardrails of these names; ValueError naming any that does not exist."""
    found = {g.name: g for g in Guardrail.objects.filter(name__in=list(names))}
    missing = [name for name in names if name not in found]
    if missing:
        raise ValueError(
            f"no guardrail {', '.join(repr(n) for n in missing)}; create it with: manage.py guardrail_create NAME ..."
        )
    return [found[name] for name in dict.fromkeys(names)]


@transaction.atomic
def guardrails_attach(
    guardrails: Sequence[Guardrail],
    *,
    tenant: Tenant | None = None,
    api_key: ApiKey | None = None,
    actor: AuditActor = None,
) -> bool:
    """Make these exactly the guardrails of `tenant` (or `api_key`); True when that changed."""
    owner: Tenant | ApiKey | None = tenant if tenant is not None else api_key
    if owner is None or (tenant is not None and api_key is not None):
        raise ValueError("attach guardrails to a tenant or to a key")
    related = owner.guardrails
    before = sorted(related.values_list("name", flat=True))
    after = sorted(g.name for g in guardrails)
    if before == after:
        return False
    related.set(guardrails)
    audit(actor, "guardrails.set", owner, {"guardrails": [before, after]})
    return True


@transaction.atomic
def guardrail_tenants_set(guardrail: Guardrail, tenants: Sequence[Tenant], *, actor: AuditActor = None) -> bool:
    """Make these exactly the tenants `guardrail` applies to (gateway_apply); True when that changed."""
    before = sorted(guardrail.tenants.values_list("slug", flat=True))
    after = sorted(t.slug for t in tenants)
    if before == after:
        return False
    guardrail.tenants.set(tenants)
    audit(actor, "guardrail.tenants", guardrail, {"tenants": [before, after]})
    return True
