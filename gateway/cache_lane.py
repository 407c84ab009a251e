"""Cache hits answered before Django.

A hit is the cheapest answer a gateway gives, yet through Django and ninja
it cost 60% of a forwarded request's CPU: the request and response objects,
the URL resolver, the middleware and ninja's operation cost the same either
way. This lane sits in front of the API handler and answers a hit to
/v1/chat/completions or /v1/embeddings straight over ASGI, through the same
steps as the full path (authenticate, parse, route, look up, admit under the
rate limits, one usage record: proxy.pipeline.hit_only) and with the same
answer. A miss goes on to Django with what was prepared left in the ASGI
scope (proxy.pipeline.Prepared), so the view does none of it again. A
refusal or a bad request goes on untouched, and the full path refuses it in
the API's own words.
"""

import logging
from collections.abc import Callable

from django.conf import settings

from accounts.auth import authenticate, key_from_headers
from gateway import lifecycle
from gateway.handlers import ASGIApp, Receive, Scope, Send, replaying
from gateway.kernel.context import PREPARED_SCOPE_KEY
from gateway.kernel.errors import GatewayError
from gateway.kernel.logs import bind_request_id
from gateway.kernel.requestid import new_request_id
from gateway.middleware import response_stamps
from proxy import dialects, pipeline
from proxy.apis.registry import SPECS
from proxy.caching import HitAnswer
from proxy.timing import timing_start

log = logging.getLogger(__name__)
# The paths of the cacheable APIs (chat completions and embeddings), each
# with its parser: their parsers read the body alone.
_CACHEABLE: dict[str, Callable[[bytes], dialects.ClientCall]] = {
    path: spec.parse_body for spec in SPECS.values() if spec.cacheable for path in spec.paths
}
_HEADERS = {b"authorization": "authorization", b"x-api-key": "x-api-key", b"cache-control": "cache-control"}


def cache_lane(app: ASGIApp) -> ASGIApp:
    """`app` behind a lane that answers cache hits itself. The body has been
    read whole already (gateway.handlers.body_limit_guard)."""

    async def lane(scope: Scope, receive: Receive, send: Send) -> None:
        parse = _CACHEABLE.get(scope["path"]) if scope["method"] == "POST" else None
        if parse is None or not settings.PROXY_CACHE_LANE:
            return await app(scope, receive, send)
        message = await receive()
        if message["type"] == "http.request" and await _hit_answered(scope, message.get("body", b""), parse, send):
            return None
        return await app(scope, replaying(message, receive), send)  # a miss carries scope[PREPARED_SCOPE_KEY]

    return lane


async def _hit_answered(scope: Scope, body: bytes, parse: Callable[[bytes], dialects.ClientCall], send: Send) -> bool:
    timing = timing_start()
    headers = _request_headers(scope)
    try:
        lifecycle.ensure_background_tasks()
        ctx = await authenticate(key_from_headers(headers.get("authorization", ""), headers.get("x-api-key", "")))
        request_id = new_request_id()
        prepared = await pipeline.prepare(ctx, parse(body), request_id, cache_control=headers.get("cache-control", ""))
        answer = await pipeline.hit_only(prepared)
    except GatewayError:
        return False  # refused: the full path refuses it again, in the API's own words
    except Exception:
        log.exception("the cache lane failed; the request goes the full path")
        return False
    if answer is None:
        scope[PREPARED_SCOPE_KEY] = prepared
        return False
    bind_request_id(request_id)
    await _send(answer, response_stamps(request_id, timing), send)
    return True


def _request_headers(scope: Scope) -> dict[str, str]:
    """The headers the lane reads; repeated ones joined as Django joins them."""
    found: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name = _HEADERS.get(raw_name)
        if name is not None:
            value = raw_value.decode("latin-1")
            found[name] = f"{found[name]},{value}" if name in found else value
    return found


async def _send(answer: HitAnswer, stamps: tuple[tuple[str, str], ...], send: Send) -> None:
    headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in answer.headers.items()]
    headers += [(name.encode(), value.encode()) for name, value in stamps]
    if answer.events is None:
        headers.append((b"content-length", str(len(answer.body)).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    if answer.events is None:
        await send({"type": "http.response.body", "body": answer.body})
        return
    for event in answer.events:  # as a relayed stream arrives: one event per chunk
        await send({"type": "http.response.body", "body": event, "more_body": True})
    await send({"type": "http.response.body", "body": b""})
