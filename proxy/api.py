"""The OpenAI-compatible /v1 operations."""

import time

from django.http import HttpRequest, JsonResponse
from django.http.response import HttpResponseBase
from ninja import Router

from proxy.auth import ApiKeyAuth
from proxy.catalog import current_catalog
from proxy.forward import chat_completions_forward
from proxy.requestid import request_id_for

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


@router.post("/chat/completions", openapi_extra=_CHAT_REQUEST_SCHEMA, summary="Create a chat completion")
async def chat_completions(request: HttpRequest) -> HttpResponseBase:
    """Forwarded as sent (only `model` is replaced); streamed when `stream` is true."""
    return await chat_completions_forward(request.auth, request.body, request_id_for(request))  # type: ignore[attr-defined]


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
