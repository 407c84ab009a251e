"""Opening a realtime session (proxy.realtime): the request path's first steps at
connect, then the provider's socket.

`session_admit` authenticates (accounts.auth: the Bearer header, x-api-key, or
the `openai-insecure-api-key.<key>` subprotocol), routes on the in-memory
catalog (proxy.routing.plan_for), admits under the key's and tenant's rate
limits and PROXY_REALTIME_MAX_SESSIONS_PER_KEY, and checks that the budget and
credit can pay one response; each raises its refusal before anything is
opened upstream. `upstream_open` connects to the provider with its own
credential, at the URL its adapter gives (proxy.providers: OpenAI's
`<base>/realtime?model=<upstream model>` with `Authorization: Bearer`, Azure's
`<base>/realtime?api-version=...&deployment=...` with `api-key`); `OpenAI-Beta`
(or the `openai-beta.realtime-v1` subprotocol) is passed on.
"""

import asyncio
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
from django.conf import settings

from accounts.auth import authenticate, key_from_headers
from billing.guard import spend_guard
from gateway.kernel.context import RoutePlan, RouteTarget, TenantContext
from gateway.kernel.errors import GatewayError, invalid_request
from proxy.catalog import current_catalog
from proxy.providers.registry import adapter_for
from proxy.ratelimit import Admission, Counter, rate_limit_admit, rate_limit_release, rate_limiter
from proxy.realtime_usage import PARAMS_DIALECT
from proxy.routing import choose, plan_for
from proxy.upstream import upstream_failure, upstream_session
from proxy.usage import reserve_worst_case

KEY_SUBPROTOCOL = "openai-insecure-api-key."
BETA_SUBPROTOCOL = "openai-beta.realtime-v1"


# --- connect: the request path's first steps ------------------------------------------


@dataclass
class Admitted:
    """A session let in: who, where to, and the slots it holds until it ends."""

    ctx: TenantContext
    targets: tuple[RouteTarget, ...]
    query: list[tuple[str, str]]  # the client's query, `model` left out
    beta: str  # the OpenAI-Beta value to pass on ("" for the GA protocol)
    limits: Admission | None
    slot: Admission | None

    def release(self, tokens: int = 0) -> None:
        rate_limit_release(self.limits, tokens)
        rate_limit_release(self.slot)


def offered_subprotocols(scope: dict[str, Any]) -> list[str]:
    return [str(p) for p in scope.get("subprotocols") or ()]


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or ()}


def presented_key(scope: dict[str, Any]) -> str:
    headers = _headers(scope)
    key = key_from_headers(headers.get("authorization", ""), headers.get("x-api-key", ""))
    if key:
        return key
    for protocol in offered_subprotocols(scope):
        if protocol.startswith(KEY_SUBPROTOCOL):
            return protocol[len(KEY_SUBPROTOCOL) :]
    return ""


async def session_admit(scope: dict[str, Any]) -> Admitted:
    """Authenticate, route, and check the limits and the budget; raises the refusal."""
    ctx = await authenticate(presented_key(scope))
    query = parse_qsl(scope.get("query_string", b"").decode("latin-1"))
    model = next((value for name, value in query if name == "model"), "")
    if not model:
        raise invalid_request("Name the model in the URL: /v1/realtime?model=NAME.", param="model")
    plan = plan_for(await current_catalog(), ctx, model)
    targets = tuple(t for t in plan.deployments if _realtime_endpoint(t, [], "") is not None)
    if not targets:
        raise GatewayError(
            400, "unsupported_endpoint", f"The provider of '{model}' does not offer the realtime API.", param="model"
        )
    await _budget_check(ctx, targets[0])
    limits = await rate_limit_admit(ctx, tokens=0)
    try:
        slot = await _session_slot(ctx)
    except BaseException:
        rate_limit_release(limits)
        raise
    rest = [(name, value) for name, value in query if name != "model"]
    return Admitted(ctx, targets, rest, _beta(scope), limits, slot)


async def _budget_check(ctx: TenantContext, target: RouteTarget) -> None:
    """Refuse a key whose budget or credit cannot pay for one response (its
    default output limit, no prompt): reserved and given back at once."""
    reservation = await reserve_worst_case(ctx, target, {}, dialect=PARAMS_DIALECT, prompt_bytes=0)
    if reservation is not None:
        spend_guard().settle_soon(reservation, 0)


async def _session_slot(ctx: TenantContext) -> Admission | None:
    """One of the key's PROXY_REALTIME_MAX_SESSIONS_PER_KEY slots (0: no
    limit), held as a request in flight is (a lease in Redis with REDIS_URL,
    renewed while the session lives)."""
    limit = settings.PROXY_REALTIME_MAX_SESSIONS_PER_KEY
    if limit <= 0:
        return None
    counter = Counter(f"key:{ctx.key_id}:realtime:parallel", limit, 1, "parallel", 24 * 3600)
    try:
        return await rate_limiter().admit((counter,), time.time())
    except GatewayError as exc:
        if exc.code != "rate_limited":
            raise
        raise GatewayError(
            429,
            "rate_limited",
            f"This API key already has {limit} realtime sessions open, its limit; close one first.",
            retryable=True,
        ) from None


def _beta(scope: dict[str, Any]) -> str:
    given = _headers(scope).get("openai-beta", "")
    if given:
        return given
    return "realtime=v1" if BETA_SUBPROTOCOL in offered_subprotocols(scope) else ""


# --- the provider's socket -----------------------------------------------------------


def _realtime_endpoint(
    target: RouteTarget, query: list[tuple[str, str]], beta: str
) -> tuple[str, dict[str, str]] | None:
    """The provider's realtime URL and headers for `target`; None where its protocol has no realtime API."""
    return adapter_for(target.provider.kind).realtime_endpoint(target.provider, target.upstream_model, query, beta)


async def upstream_open(admitted: Admitted) -> tuple[aiohttp.ClientWebSocketResponse, RouteTarget]:
    """The provider's socket, from the first deployment that accepts: one
    picked by weight, then the others; a refusal no retry can help ends it."""
    targets = admitted.targets
    first = choose(RoutePlan(targets[0].public_model, targets), healthy=lambda t: True, exclude=set()) or targets[0]
    failure: GatewayError | None = None
    for target in (first, *(t for t in targets if t is not first)):
        try:
            return await _connect(target, admitted), target
        except GatewayError as exc:
            failure = exc
            if not exc.retryable:
                break
    assert failure is not None
    raise failure


async def _connect(target: RouteTarget, admitted: Admitted) -> aiohttp.ClientWebSocketResponse:
    provider = target.provider
    endpoint = _realtime_endpoint(target, admitted.query, admitted.beta)
    assert endpoint is not None  # session_admit kept only the targets that have one
    url, headers = endpoint
    try:
        async with asyncio.timeout(provider.connect_timeout):
            return await upstream_session().ws_connect(
                url,
                headers=headers,
                max_msg_size=settings.PROXY_MAX_BODY_BYTES,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
            )
    except aiohttp.WSServerHandshakeError as exc:
        if exc.status in (401, 403):
            raise GatewayError(
                502, "upstream_auth_failed", f"The provider '{provider.name}' rejected the gateway's credential."
            ) from None
        raise GatewayError(
            502 if exc.status < 500 else 503,
            "upstream_error",
            f"The provider '{provider.name}' refused the realtime connection (HTTP {exc.status}).",
            retryable=exc.status >= 500 or exc.status == 429,
        ) from None
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise upstream_failure(exc, provider.name) from None
