"""Who may use the management API: active staff, by session or by staff token,
holding the same model permissions admin asks for.

The token is tried first: a token request carries no session, and the
session check enforces CSRF on writes, as django-ninja does for cookies.

Each operation needs the permissions admin would ask for on its model: view
to read, add to create, change to edit, delete to delete (superusers hold
them all). The model is named by the path's first segment, so a router added
without an entry in MODELS is refused to everyone but superusers.
"""

from functools import cache
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.urls import reverse
from ninja.security import APIKeyCookie, HttpBearer

from accounts.audit import Actor
from accounts.staff_tokens import staff_token_lookup
from gateway.kernel.requestid import request_id_for
from gateway.manage_api.errors import ManagementError


class StaffTokenAuth(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> Any:
        staff_token = staff_token_lookup(token)
        if staff_token is None:
            return None
        request.staff_token = staff_token  # type: ignore[attr-defined]  # for actor_of
        permission_check(request, staff_token.user)
        return staff_token.user


class StaffSessionAuth(APIKeyCookie):
    """Django's session, for staff only (signed in but not staff: 403)."""

    param_name = settings.SESSION_COOKIE_NAME

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        user = request.user
        if not user.is_authenticated:
            return None
        if not (user.is_active and user.is_staff):
            raise ManagementError(403, "staff_required", "The management API is for staff only.")
        permission_check(request, user)
        return user


# The model behind each resource: its permissions are the ones admin checks.
MODELS = {
    "tenants": "accounts.tenant",
    "keys": "accounts.apikey",
    "budgets": "billing.budget",
    "providers": "proxy.provider",
    "routes": "proxy.route",
    "prices": "billing.price",
    "audit": "accounts.auditentry",
    "usage": "billing.usagerecord",
}
ACTIONS = {
    "GET": ("view",),
    "POST": ("add",),
    "PUT": ("add", "change"),  # PUT /api/budgets creates or changes: admin asks add for one, change for the other
    "PATCH": ("change",),
    "DELETE": ("delete",),
}
# POSTs to an existing object that change it rather than create one.
POST_ACTIONS = {"revoke": ("change",), "deactivate": ("change",), "rotate": ("add", "change")}


def permissions_required(method: str, path: str) -> list[str]:
    """The permissions an operation needs, e.g. ("POST", "keys/3/rotate") ->
    ["accounts.add_apikey", "accounts.change_apikey"]; [] when nobody but a superuser may."""
    parts = path.strip("/").split("/")
    model = MODELS.get(parts[0])
    if model is None or method not in ACTIONS:
        return []
    actions = POST_ACTIONS.get(parts[-1], ACTIONS[method]) if method == "POST" and len(parts) > 1 else ACTIONS[method]
    app_label, model_name = model.split(".")
    return [f"{app_label}.{action}_{model_name}" for action in actions]


def permission_check(request: HttpRequest, user: Any) -> None:
    """Refuse (403 `permission_denied`) a user without the operation's model permissions."""
    if user.is_active and user.is_superuser:
        return
    path = request.path_info.removeprefix(_api_root())
    required = permissions_required(request.method or "GET", path)
    if not required:
        raise ManagementError(403, "permission_denied", "Only a superuser may call this operation.")
    missing = [name for name in required if not user.has_perm(name)]
    if missing:
        message = f"This needs the permission {', '.join(missing)} (as in admin); ask a superuser to grant it."
        raise ManagementError(403, "permission_denied", message)


@cache
def _api_root() -> str:
    return reverse("manage:api-root")


staff_auth = [StaffTokenAuth(), StaffSessionAuth()]


def actor_of(request: HttpRequest) -> Actor:
    return Actor.of(request.auth, getattr(request, "staff_token", None))  # type: ignore[attr-defined]  # request.auth: ninja's


def request_id(request: HttpRequest) -> str:
    return request_id_for(request)
