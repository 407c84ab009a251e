"""Virtual-key authentication for /v1 (async: no thread hop per request)."""

from typing import Any

from django.http import HttpRequest
from django.utils import timezone
from ninja.security.base import AuthBase

from accounts.keys import KEY_PREFIX
from accounts.snapshots import tenant_context_for_key
from gateway import lifecycle
from proxy.context import TenantContext
from proxy.errors import GatewayError, invalid_api_key

_MAX_KEY_LENGTH = 200


def presented_key(request: HttpRequest) -> str:
    return key_from_headers(request.headers.get("Authorization", ""), request.headers.get("x-api-key", ""))


def key_from_headers(authorization: str, x_api_key: str) -> str:
    """The key from `Authorization: Bearer ...` or `x-api-key` (Anthropic style)."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return x_api_key.strip()


class ApiKeyAuth(AuthBase):
    openapi_type = "http"
    openapi_scheme = "bearer"

    def __init__(self) -> None:
        super().__init__()
        self.is_async = True

    async def __call__(self, request: HttpRequest) -> Any:
        lifecycle.ensure_background_tasks()
        return await authenticate(presented_key(request))


async def authenticate(token: str) -> TenantContext:
    if not token:
        raise GatewayError(
            401, "missing_api_key", "No API key provided. Send it as 'Authorization: Bearer <key>' or 'x-api-key'."
        )
    # Anything that cannot be one of our keys is refused without a lookup.
    if not token.startswith(KEY_PREFIX) or len(token) > _MAX_KEY_LENGTH:
        raise invalid_api_key()
    ctx = await tenant_context_for_key(token)
    if ctx is None:
        raise invalid_api_key("Invalid or revoked API key.")
    if ctx.is_expired(timezone.now()):
        raise GatewayError(401, "expired_api_key", "This API key has expired.")
    if not ctx.tenant_active:
        raise GatewayError(403, "tenant_disabled", "This API key's tenant is disabled.")
    return ctx
