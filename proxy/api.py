"""The OpenAI-compatible /v1 operations."""

import logging
import time
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.http.response import HttpResponseBase
from ninja import Router

from proxy.auth import ApiKeyAuth
from proxy.catalog import current_catalog
from proxy.errors import ApiFormat, GatewayError
from proxy.forward import chat_completions_forward, embeddings_forward
from proxy.requestid import request_id_for

log = logging.getLogger("gateway.errors")
router = Router(auth=ApiKeyAuth(), tags=["OpenAI-compatible"])

_CHAT_REQUEST_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["model", "messages"],
                    "additionalProperties": True,
                    "properties": {
                        "model": {"type": "string", "minLength": 1},
                        "messages": {"type": "array", "minItems": 1, "items": {"type": "object"}},
                        "stream": {"type": "boolean"},
                    },
                }
            }
        },
    }
}


def _forward_args(request: HttpRequest) -> dict[str, Any]:
    """What every forwarding operation passes on from the request."""
    return {
        "ctx": request.auth,  # type: ignore[attr-defined]
        "raw": request.body,
        "request_id": request_id_for(request),
        "cache_control": request.headers.get("Cache-Control", ""),
    }


@router.post("/chat/completions", openapi_extra=_CHAT_REQUEST_SCHEMA, summary="Create a chat completion")
async def chat_completions(request: HttpRequest) -> HttpResponseBase:
    """Forwarded as sent (only `model` is replaced); streamed when `stream` is true."""
    return await chat_completions_forward(**_forward_args(request))


@router.post("/embeddings", summary="Create embeddings")
async def embeddings(request: HttpRequest) -> HttpResponseBase:
    """Forwarded as sent (only `model` is replaced), metered, and cacheable."""
    return await embeddings_forward(**_forward_args(request))


async def cached_chat_completions(request: HttpRequest) -> HttpResponseBase:
    """/cache/chat/completions and /cache/v1/chat/completions: always through
    the response cache, for clients built against the old cache proxy."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    try:
        request.auth = await ApiKeyAuth()(request)  # type: ignore[attr-defined]
        return await chat_completions_forward(**_forward_args(request), force_cache=True)
    except GatewayError as error:
        response = HttpResponse(error.body(ApiFormat.OPENAI), status=error.status, content_type="application/json")
        for name, value in error.headers.items():
            response[name] = value
        return response
    except Exception:  # as the API's own handler does: log it, tell the client no secrets
        log.exception("unhandled error on %s", request.path)
        error = GatewayError(500, "internal_error", "The gateway failed to handle this request.")
        return HttpResponse(error.body(ApiFormat.OPENAI), status=500, content_type="application/json")


@router.get("/models", summary="List the models this key may use")
async def models(request: HttpRequest) -> JsonResponse:
    ctx = request.auth  # type: ignore[attr-defined]
    catalog = await current_catalog()
    created = int(time.time())
    data = [
        {"id": name, "object": "model", "created": created, "owned_by": catalog.routes[name].provider.name}
        for name in catalog.listed_models()
        if ctx.allows(name)
    ]
    return JsonResponse({"object": "list", "data": data})
