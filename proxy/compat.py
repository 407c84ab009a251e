"""Entrances for clients that cannot use /v1 as it is.

* Ollama's API (`/api/chat`, `/api/generate`, `/api/embed`,
  `/api/embeddings`, `/api/tags`, `/api/show`, `/api/ps`, `/api/version`)
  for local tools that speak it, served from any upstream. The virtual key
  goes in `Authorization: Bearer` (as Ollama clients behind a proxy send
  it) or as the password of Basic auth. Any other `/api/...` path the
  management API does not serve is Ollama's 404, `{"error": ...}`.
* The provider in the path (`/openrouter/v1/chat/completions`) for clients
  that cannot put a provider prefix in the model name: the same as asking
  /v1 for the model `openrouter/<model>`.
"""

import dataclasses
import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import orjson
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from gateway.kernel.context import TenantContext
from gateway.kernel.errors import ApiFormat, GatewayError, error_body, error_response, invalid_request
from gateway.kernel.requestid import request_id_for
from proxy import pipeline
from proxy.api import answer_in_envelope
from proxy.apis.embeddings import embeddings_call
from proxy.apis.registry import error_format_for_path, spec_for, spec_for_path
from proxy.catalog import current_catalog
from proxy.dialects import ClientCall, Dialect
from proxy.exchange import NOTES_HEADER
from proxy.routing import Catalog, may_use
from proxy.translate import Translated, TranslationError

# What /api/version answers: an Ollama recent enough for every field served here.
OLLAMA_VERSION = "0.12.0"
# How long a local Ollama keeps a model loaded by default; /api/ps reports
# that much time left for each model.
_OLLAMA_KEEP_ALIVE = dt.timedelta(minutes=5)


async def _forward(request: HttpRequest, ctx: TenantContext, call: ClientCall) -> HttpResponseBase:
    cache_control = request.headers.get("Cache-Control", "")
    return await pipeline.handle(
        await pipeline.prepare(ctx, call, request_id_for(request), cache_control=cache_control)
    )


def _only(request: HttpRequest, methods: tuple[str, ...], fmt: ApiFormat | None = None) -> HttpResponse | None:
    """A 405 in the API's envelope (the path's, unless `fmt` says) for any other method."""
    if request.method in methods:
        return None
    fmt = error_format_for_path(request.path) if fmt is None else fmt
    message = f"{request.method} is not allowed on {request.path}; use {' or '.join(methods)}."
    return error_response(GatewayError(405, "method_not_allowed", message, headers={"Allow": ", ".join(methods)}), fmt)


def _post_only(request: HttpRequest, fmt: ApiFormat | None = None) -> HttpResponse | None:
    return _only(request, ("POST",), fmt)


async def ollama_chat(request: HttpRequest) -> HttpResponseBase:
    if refused := _post_only(request):
        return refused
    return await answer_in_envelope(
        request, lambda ctx: _forward(request, ctx, spec_for(Dialect.OLLAMA_CHAT).parse_request(request))
    )


async def ollama_generate(request: HttpRequest) -> HttpResponseBase:
    if refused := _post_only(request):
        return refused
    return await answer_in_envelope(
        request, lambda ctx: _forward(request, ctx, spec_for(Dialect.OLLAMA_GENERATE).parse_request(request))
    )


def _usable(catalog: Catalog, ctx: TenantContext) -> list[tuple[str, str]]:
    """(name, owner) of every listed model this key may use."""
    return [(name, catalog.owner(name)) for name in catalog.listed_models() if may_use(catalog, ctx, name)]


async def ollama_tags_view(request: HttpRequest) -> HttpResponseBase:
    async def tags(ctx: TenantContext) -> HttpResponseBase:
        from proxy.translate.ollama_catalog import ollama_tags  # loaded on use (proxy.exchange)

        catalog = await current_catalog()
        return JsonResponse(ollama_tags(_usable(catalog, ctx), modified_at=timezone.now().isoformat()))

    return await answer_in_envelope(request, tags)


async def ollama_ps_view(request: HttpRequest) -> HttpResponseBase:
    if refused := _only(request, ("GET", "HEAD")):
        return refused

    async def ps(ctx: TenantContext) -> HttpResponseBase:
        from proxy.translate.ollama_catalog import ollama_ps  # loaded on use (proxy.exchange)

        catalog = await current_catalog()
        expires_at = (timezone.now() + _OLLAMA_KEEP_ALIVE).isoformat()
        return JsonResponse(ollama_ps(_usable(catalog, ctx), expires_at=expires_at))

    return await answer_in_envelope(request, ps)


async def ollama_show_view(request: HttpRequest) -> HttpResponseBase:
    """A model this key may call, listed or reached through a wildcard route
    or an alias. Any other name is Ollama's own 404, whether it is not
    routed or the key may not use it, so a key learns nothing of the models
    it cannot call."""
    if refused := _post_only(request):
        return refused

    async def show(ctx: TenantContext) -> HttpResponseBase:
        from proxy.translate.ollama_catalog import ollama_show  # loaded on use (proxy.exchange)

        body = _json_object(request.body)
        name = body.get("model") or body.get("name")  # `name` in clients older than Ollama 0.4
        if not isinstance(name, str) or not name.strip():
            raise invalid_request("'model' is required and must be a non-empty string.", param="model")
        catalog = await current_catalog()
        found = catalog.lookup(name)
        if found is None or not may_use(catalog, ctx, name):
            raise GatewayError(404, "model_not_found", f"model '{name}' not found", param="model")
        owner = found.plan.deployments[0].provider.name
        return JsonResponse(ollama_show(name, owner, modified_at=timezone.now().isoformat()))

    return await answer_in_envelope(request, show)


async def ollama_version(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"version": OLLAMA_VERSION})


async def ollama_embed(request: HttpRequest) -> HttpResponseBase:
    """/api/embed through the model's OpenAI embeddings route: routed,
    limited, budgeted and metered as /v1/embeddings is (its usage rows say
    `embeddings`)."""
    from proxy.translate.ollama_embed_to_embeddings.request import ollama_embed_request_to_embeddings
    from proxy.translate.ollama_embed_to_embeddings.response import embeddings_response_to_ollama_embed

    started = time.perf_counter_ns()
    return await _ollama_embeddings(
        request,
        ollama_embed_request_to_embeddings,
        lambda data, model: embeddings_response_to_ollama_embed(
            data, model=model, duration_ns=time.perf_counter_ns() - started
        ),
    )


async def ollama_embeddings(request: HttpRequest) -> HttpResponseBase:
    """The legacy /api/embeddings (one `prompt`, one `embedding`), the same way."""
    from proxy.translate.ollama_embed_to_embeddings.request import ollama_embeddings_request_to_embeddings
    from proxy.translate.ollama_embed_to_embeddings.response import embeddings_response_to_ollama_embeddings

    return await _ollama_embeddings(
        request,
        ollama_embeddings_request_to_embeddings,
        lambda data, model: embeddings_response_to_ollama_embeddings(data),
    )


async def _ollama_embeddings(
    request: HttpRequest,
    to_openai: Callable[[dict[str, Any]], Translated],
    from_openai: Callable[[dict[str, Any], str], dict[str, Any]],
) -> HttpResponseBase:
    if refused := _post_only(request):
        return refused

    async def embed(ctx: TenantContext) -> HttpResponseBase:
        try:
            translated = to_openai(_json_object(request.body))
        except TranslationError as exc:
            raise invalid_request(str(exc), param=exc.param) from None
        call = embeddings_call(orjson.dumps(translated.body))
        response = await _forward(request, ctx, call)
        answer = _as_ollama(response, lambda data: from_openai(data, call.body["model"]))
        if translated.notes:
            answer[NOTES_HEADER] = "; ".join(translated.notes)
        return answer

    return await answer_in_envelope(request, embed)


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw) if raw.strip() else None
    except orjson.JSONDecodeError as exc:
        raise GatewayError(400, "invalid_json", f"The request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object.")
    return body


# Headers of the embeddings answer that describe its old body.
_BODY_HEADERS = frozenset({"content-type", "content-length"})


def _as_ollama(response: HttpResponseBase, convert: Callable[[dict[str, Any]], dict[str, Any]]) -> HttpResponseBase:
    """An OpenAI embeddings answer (or error) in Ollama's shape, with the
    gateway's headers (request id, cache, rate limits) kept."""
    content = getattr(response, "content", None)  # never a stream: embeddings are answered whole
    if not isinstance(content, bytes):
        return response
    status = response.status_code
    try:
        data: Any = orjson.loads(content)
    except orjson.JSONDecodeError:
        data = None
    if status >= 400:
        body = _ollama_error(data, status)
    else:
        try:
            body = orjson.dumps(convert(data))
        except (ValueError, TypeError, AttributeError):
            status = 502
            message = "The provider sent an embeddings answer that is not the JSON its API defines."
            body = error_body(ApiFormat.OLLAMA, status=502, code="upstream_bad_response", message=message)
    out = HttpResponse(body, status=status, content_type="application/json")
    for name, value in response.items():
        if name.lower() not in _BODY_HEADERS:
            out[name] = value
    return out


def _ollama_error(data: Any, status: int) -> bytes:
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        error = {}
    message = str(error.get("message") or "The embeddings request failed.")
    code = str(error.get("code") or "upstream_error")
    return error_body(ApiFormat.OLLAMA, status=status, code=code, message=message)


@csrf_exempt  # served by the full middleware stack (the management API's paths)
async def ollama_not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    """Any /api/ path neither Ollama's API here nor the management API
    serves: Ollama's JSON 404, never Django's HTML page."""
    message = (
        f"{request.path} is not served here: this gateway offers Ollama's "
        "chat, generate, embed, embeddings, tags, show, ps and version."
    )
    return error_response(GatewayError(404, "not_found", message), error_format_for_path(request.path))


async def provider_in_path(request: HttpRequest, provider: str, operation: str) -> HttpResponseBase:
    path = f"/v1/{operation}"  # errors in the envelope of the API the operation names
    spec, fmt = spec_for_path(path), error_format_for_path(path)
    if spec is None or not spec.provider_in_path:
        return error_response(GatewayError(404, "not_found", f"Unknown operation '/v1/{operation}'."), fmt)
    if refused := _post_only(request, fmt):
        return refused

    async def handle(ctx: TenantContext) -> HttpResponseBase:
        call = spec.parse_request(request)
        call = dataclasses.replace(call, body={**call.body, "model": f"{provider}/{call.body['model']}"})
        return await _forward(request, ctx, call)

    return await answer_in_envelope(request, handle, fmt=fmt)
