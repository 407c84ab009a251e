"""The audit trail of the management API: every write leaves an AuditEntry.

Call `audit()` inside the write's transaction, so an entry exists exactly
when the write committed. `changes` is scrubbed of secrets (credentials,
keys, tokens) before it is stored: the entry says a credential changed,
never what it is.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Model

from accounts.models import AuditEntry, StaffToken
from gateway.logs import redact_value


@dataclass(frozen=True)
class Actor:
    """Who made a change: a user (by session or token), or a named system."""

    user: AbstractBaseUser | None
    label: str

    @classmethod
    def of(cls, user: AbstractBaseUser, token: StaffToken | None = None) -> "Actor":
        name = user.get_username()
        return cls(user=user, label=f"{name} (token {token.prefix}…)" if token is not None else name)


def audit(
    actor: Actor | AbstractBaseUser | str | None,
    action: str,
    obj: Model,
    changes: Mapping[str, Any] | None = None,
    *,
    request_id: str = "",
) -> AuditEntry:
    """Record that `actor` did `action` (e.g. "tenant.update") to `obj`."""
    who = _actor(actor)
    return AuditEntry.objects.create(
        user=who.user if who.user is not None and who.user.pk is not None else None,
        actor=who.label[:200],
        action=action,
        object_type=obj._meta.label_lower,
        object_id=str(obj.pk),
        object_repr=str(obj)[:200],
        changes=scrub(changes or {}),
        request_id=request_id,
    )


def scrub(changes: Mapping[str, Any]) -> dict[str, Any]:
    """`changes` with every secret replaced by a marker."""
    return {str(name): redact_value(str(name), value) for name, value in changes.items()}


def _actor(actor: Actor | AbstractBaseUser | str | None) -> Actor:
    if isinstance(actor, Actor):
        return actor
    if actor is None:
        return Actor(user=None, label="system")
    if isinstance(actor, str):
        return Actor(user=None, label=actor)
    return Actor.of(actor)
