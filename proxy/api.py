"""The OpenAI-compatible /v1 operations."""

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from django.http import HttpRequest, HttpResponseNotAllowed, JsonResponse
from django.http.response import HttpResponseBase
from ninja import Path, Query, Router

from accounts.auth import ApiKeyAuth
from gateway.kernel.context import TenantContext, caller
from gateway.kernel.errors import ApiFormat, GatewayError, error_response
from proxy import dialects, pipeline, responses_state
from proxy.apis.registry import error_format_for_path, spec_for
from proxy.catalog import current_catalog
from proxy.dialects import Dialect
from proxy.routing import may_use

log = logging.getLogger("gateway.errors")
router = Router(auth=ApiKeyAuth(), tags=["OpenAI-compatible"])
_CHAT = spec_for(Dialect.CHAT)

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
    """Forwarded as sent (only `model` is replaced) to OpenAI-format
    upstreams, translated for Anthropic ones; streamed when `stream` is true."""
    return await pipeline.handle(await pipeline.prepared_for(request, _CHAT.parse_request))


@router.post("/embeddings", summary="Create embeddings")
async def embeddings(request: HttpRequest) -> HttpResponseBase:
    """Forwarded as sent (only `model` is replaced), metered, and cacheable."""
    return await pipeline.handle(await pipeline.prepared_for(request, spec_for(Dialect.EMBEDDINGS).parse_request))


@router.post("/completions", summary="Create a completion (legacy)")
async def completions(request: HttpRequest) -> HttpResponseBase:
    """Passed through where the provider still serves it, else translated to chat."""
    return await pipeline.handle(await pipeline.prepared_for(request, spec_for(Dialect.COMPLETIONS).parse_request))


@router.post("/responses", summary="Create a model response (Responses API)")
async def responses(request: HttpRequest) -> HttpResponseBase:
    """Passed through to providers with the Responses API, translated to chat
    completions for the others; those answers are stored by the gateway
    (unless `store` is false) so that `previous_response_id` works with
    every provider."""
    return await pipeline.handle(await pipeline.prepared_for(request, spec_for(Dialect.RESPONSES).parse_request))


# The responses the gateway stored (translated ones: a provider with the
# Responses API keeps its own). Another tenant's id is a 404, like an unknown one.
@router.get("/responses/{response_id}", summary="Retrieve a stored model response")
async def response_retrieve(request: HttpRequest, response_id: str) -> JsonResponse:
    return JsonResponse(await responses_state.response_retrieve(caller(request), response_id))


@router.delete("/responses/{response_id}", summary="Delete a stored model response")
async def response_delete(request: HttpRequest, response_id: str) -> JsonResponse:
    return JsonResponse(await responses_state.response_delete(caller(request), response_id))


@router.get("/responses/{response_id}/input_items", summary="List the input items of a stored model response")
async def response_input_items(
    request: HttpRequest,
    response_id: str,
    limit: int = Query(20, ge=1, le=responses_state.INPUT_ITEMS_LIMIT_MAX),
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
) -> JsonResponse:
    """OpenAI's list: `data`, `first_id`, `last_id`, `has_more`; newest first
    unless `order=asc`, `after` an item id of the previous page."""
    page = await responses_state.response_input_items(
        caller(request),
        response_id,
        limit=limit,
        order=order,
        after=after,
    )
    return JsonResponse(page)


@router.post("/messages", tags=["Anthropic-compatible"], summary="Create a message (Anthropic Messages API)")
async def messages(request: HttpRequest) -> HttpResponseBase:
    """Passed through byte for byte to Anthropic upstreams, translated for
    OpenAI-format ones; errors in Anthropic's envelope."""
    return await pipeline.handle(await pipeline.prepared_for(request, spec_for(Dialect.MESSAGES).parse_request))


@router.post("/messages/count_tokens", tags=["Anthropic-compatible"], summary="Count the tokens of a message")
async def count_tokens(request: HttpRequest) -> HttpResponseBase:
    """Counted by Anthropic upstreams; estimated for others, and the answer's
    `x-gateway-token-count: estimated` header says so."""
    return await pipeline.handle(await pipeline.prepared_for(request, spec_for(Dialect.COUNT_TOKENS).parse_request))


# The media endpoints (proxy.media): the same pipeline; multipart bodies are
# read in place and re-sent as slices, never parsed into upload files.
@router.post("/audio/transcriptions", summary="Transcribe audio")
async def audio_transcriptions(request: HttpRequest) -> HttpResponseBase:
    return await pipeline.handle(await pipeline.prepared_for(request, spec_for(Dialect.TRANSCRIPTIONS).parse_request))


@router.post("/audio/translations", summary="Translate audio into English")
async def audio_translations(request: HttpRequest) -> HttpResponseBase:
    return await pipeline.handle(await pipeline.prepared_for(request, spec_for(Dialect.TRANSLATIONS).parse_request))


@router.post("/audio/speech", summary="Generate speech (the audio relayed as it arrives)")
async def audio_speech(request: HttpRequest) -> HttpResponseBase:
    return await pipeline.handle(await pipeline.prepared_for(request, spec_for(Dialect.SPEECH).parse_request))


@router.post("/images/generations", summary="Generate images")
async def images_generations(request: HttpRequest) -> HttpResponseBase:
    return await pipeline.handle(await pipeline.prepared_for(request, spec_for(Dialect.IMAGES).parse_request))


@router.post("/images/edits", summary="Edit an image")
async def images_edits(request: HttpRequest) -> HttpResponseBase:
    return await pipeline.handle(await pipeline.prepared_for(request, spec_for(Dialect.IMAGE_EDITS).parse_request))


async def cached_chat_completions(request: HttpRequest) -> HttpResponseBase:
    """/cache/chat/completions and /cache/v1/chat/completions: always through
    the response cache, for clients built against the old cache proxy."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    return await answer_in_envelope(request, lambda ctx: _cached_chat(request))


async def _cached_chat(request: HttpRequest) -> HttpResponseBase:
    return await pipeline.handle(await pipeline.prepared_for(request, _CHAT.parse_request), force_cache=True)


async def answer_in_envelope(
    request: HttpRequest,
    handle: Callable[[TenantContext], Awaitable[HttpResponseBase]],
    *,
    fmt: ApiFormat | None = None,
) -> HttpResponseBase:
    """For views outside the NinjaAPI: authenticate, then render refusals and
    bugs as the API's own handlers would (in the path's envelope unless `fmt` says)."""
    fmt = error_format_for_path(request.path) if fmt is None else fmt
    try:
        request.auth = ctx = await ApiKeyAuth()(request)  # type: ignore[attr-defined]  # where ninja keeps it
        return await handle(ctx)
    except GatewayError as error:
        return error_response(error, fmt)
    except Exception:  # as the API's own handler does: log it, tell the client no secrets
        log.exception("unhandled error on %s", request.path)
        return error_response(GatewayError(500, "internal_error", "The gateway failed to handle this request."), fmt)


@router.get("/models", summary="List the models this key may use")
async def models(request: HttpRequest) -> JsonResponse:
    ctx = caller(request)
    catalog = await current_catalog()
    created = int(time.time())
    data = [
        _model_object(name, catalog.owner(name), created)
        for name in catalog.listed_models()
        if may_use(catalog, ctx, name)
    ]
    return JsonResponse({"object": "list", "data": data})


# `path:` because model names hold slashes (`openrouter/meta/llama-3`).
@router.get("/models/{path:model}", summary="Retrieve a model this key may use")
async def model(request: HttpRequest, model: str = Path(..., max_length=dialects.MODEL_NAME_MAX)) -> JsonResponse:
    """Any name this key may call: listed, or reached through a wildcard
    route or an alias. Others are 404, whether they do not exist or the key
    may not use them, so a key learns nothing of the models it cannot call."""
    ctx = caller(request)
    catalog = await current_catalog()
    if (model in catalog.routers or model in catalog.augmentors) and may_use(catalog, ctx, model):  # the gateway's own
        return JsonResponse(_model_object(model, catalog.owner(model), int(time.time())))
    found = catalog.lookup(model)
    if found is None or not may_use(catalog, ctx, model):
        raise GatewayError(404, "model_not_found", f"The model '{model}' does not exist.", param="model")
    return JsonResponse(_model_object(model, found.plan.deployments[0].provider.name, int(time.time())))


def _model_object(name: str, owner: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": owner}
