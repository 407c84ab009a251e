"""Virtual-key authentication for /v1 and Ollama's /api (async: no thread hop per request)."""

import base64
import binascii
from typing import Any

from django.http import HttpRequest
from django.utils import timezone
from ninja.security.base import AuthBase

from accounts.keys import KEY_PREFIX
from accounts.snapshots import tenant_context_for_key
from gateway.kernel.context import PREPARED_SCOPE_KEY, TenantContext
from gateway.kernel.errors import GatewayError, invalid_api_key

_MAX_KEY_LENGTH = 200


def presented_key(request: HttpRequest) -> str:
    return key_from_headers(request.headers.get("Authorization", ""), request.headers.get("x-api-key", ""))


def key_from_headers(authorization: str, x_api_key: str) -> str:
    """The key from `Authorization: Bearer ...`, `x-api-key` (Anthropic
    style), or `Authorization: Basic` with the key as the password, for
    clients that can only send a user and a password (a URL such as
    `http://user:sk-gw-...@host`)."""
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if token and scheme.lower() == "bearer":
        return token
    if token and scheme.lower() == "basic":
        return _basic_password(token)
    return x_api_key.strip()


def _basic_password(token: str) -> str:
    """The password of Basic credentials (the user is ignored), or the user
    when the password is empty (`sk-gw-...:`, as some clients write a key).
    Credentials that cannot be read are returned as they came, so they are
    refused as an invalid key, not as a missing one."""
    try:
        decoded = base64.b64decode(token, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return token
    user, _, password = decoded.partition(":")
    return (password or user).strip() or token


class ApiKeyAuth(AuthBase):
    openapi_type = "http"
    openapi_scheme = "bearer"

    def __init__(self) -> None:
        super().__init__()
        self.is_async = True

    async def __call__(self, request: HttpRequest) -> Any:
        prepared = getattr(request, "scope", {}).get(PREPARED_SCOPE_KEY)
        if prepared is not None:  # the cache lane authenticated this request already
            return prepared.ctx
        return await authenticate(presented_key(request))


async def authenticate(token: str) -> TenantContext:
    if not token:
        raise GatewayError(
            401,
            "missing_api_key",
            "No API key provided. Send it as 'Authorization: Bearer <key>', 'x-api-key', or the password of Basic auth.",
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
