"""Who may use the management API: active staff, by session or by staff token.

The token is tried first: a token request carries no session, and the
session check enforces CSRF on writes, as django-ninja does for cookies.
"""

from typing import Any

from django.conf import settings
from django.http import HttpRequest
from ninja.security import APIKeyCookie, HttpBearer

from accounts.audit import Actor
from accounts.staff_tokens import staff_token_lookup
from gateway.manage_api.errors import ManagementError
from proxy.requestid import request_id_for


class StaffTokenAuth(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> Any:
        staff_token = staff_token_lookup(token)
        if staff_token is None:
            return None
        request.staff_token = staff_token  # type: ignore[attr-defined]
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
        return user


staff_auth = [StaffTokenAuth(), StaffSessionAuth()]


def actor_of(request: HttpRequest) -> Actor:
    return Actor.of(request.auth, getattr(request, "staff_token", None))  # type: ignore[attr-defined]


def request_id(request: HttpRequest) -> str:
    return request_id_for(request)
