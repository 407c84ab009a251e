"""The audit trail: every write that changes money, access or routing leaves an AuditEntry,
whoever made it (the management API, admin or a command).

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
from django.http import HttpRequest

from accounts.models import AuditEntry, StaffToken
from gateway.kernel.logs import redact_value


@dataclass(frozen=True)
class Actor:
    """Who made a change: a user (by session or token), or a named system."""

    user: AbstractBaseUser | None
    label: str

    @classmethod
    def of(cls, user: AbstractBaseUser, token: StaffToken | None = None) -> "Actor":
        name = user.get_username()
        return cls(user=user, label=f"{name} (token {token.prefix}…)" if token is not None else name)


# Who a service call audits as: an Actor, a user, a label, or None ("system").
AuditActor = Actor | AbstractBaseUser | str | None


def command_actor(module: str) -> Actor:
    """Who a management command acts as: `command_actor(__name__)` -> "manage.py key_create"."""
    return Actor(user=None, label=f"manage.py {module.rsplit('.', 1)[-1]}")


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
        user_id=who.user.pk if who.user is not None else None,
        actor=who.label[:200],
        action=action,
        object_type=obj._meta.label_lower,
        object_id=str(obj.pk),
        object_repr=str(obj)[:200],
        changes=scrub(changes or {}),
        request_id=request_id,
    )


def audit_by(request: HttpRequest, action: str, obj: Model, changes: Mapping[str, Any] | None = None) -> AuditEntry:
    """`audit()` for a write made in admin: by the signed-in user."""
    user: Any = request.user  # admin lets in signed-in staff only
    return audit(user, action, obj, changes)


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


def credential_changes(api_key: str | None, api_key_env: str | None) -> dict[str, Any]:
    """What the audit may say about a credential: that it was set, never what it is.
    None: not touched."""
    changes: dict[str, Any] = {}
    if api_key is not None:
        changes["api_key_stored"] = "set" if api_key else "cleared"  # never the value
    if api_key_env is not None:
        changes["api_key_env"] = api_key_env
    return changes


def changes_between(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, list[Any]]:
    """{field: [old, new]} for the fields of `before` whose value differs in `after`.

    A provider's base URL is one of them wherever it changes: the stored
    credential is sent to that URL, so moving it is as sensitive as the
    credential itself."""
    return {name: [old, after.get(name)] for name, old in before.items() if old != after.get(name)}
