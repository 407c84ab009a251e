"""Entrances for clients that cannot use /v1 as it is.

* Ollama's API (`/api/chat`, `/api/generate`, `/api/tags`, `/api/version`)
  for local tools that speak it, served from any upstream. The virtual key
  goes in `Authorization: Bearer`, as Ollama clients behind a proxy send it.
* The provider in the path (`/openrouter/v1/chat/completions`) for clients
  that cannot put a provider prefix in the model name: the same as asking
  /v1 for the model `openrouter/<model>`.
"""

import dataclasses
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.http.response import HttpResponseBase
from django.utils import timezone

from proxy import dialects
from proxy.api import answer_in_envelope
from proxy.catalog import current_catalog
from proxy.context import TenantContext
from proxy.dialects import ClientCall
from proxy.errors import ApiFormat, GatewayError
from proxy.forward import forward
from proxy.requestid import request_id_for
from proxy.routing import may_use

# What /api/version answers: an Ollama recent enough for every field served here.
OLLAMA_VERSION = "0.12.0"


async def _forward(request: HttpRequest, ctx: TenantContext, call: ClientCall) -> HttpResponseBase:
    return await forward(ctx, call, request_id_for(request), cache_control=request.headers.get("Cache-Control", ""))


def _post_only(request: HttpRequest) -> HttpResponse | None:
    return None if request.method == "POST" else HttpResponseNotAllowed(["POST"])


async def ollama_chat(request: HttpRequest) -> HttpResponseBase:
    if refused := _post_only(request):
        return refused
    return await answer_in_envelope(
        request, ApiFormat.OLLAMA, lambda ctx: _forward(request, ctx, dialects.ollama_chat_call(request.body))
    )


async def ollama_generate(request: HttpRequest) -> HttpResponseBase:
    if refused := _post_only(request):
        return refused
    return await answer_in_envelope(
        request, ApiFormat.OLLAMA, lambda ctx: _forward(request, ctx, dialects.ollama_generate_call(request.body))
    )


async def ollama_tags_view(request: HttpRequest) -> HttpResponseBase:
    async def tags(ctx: TenantContext) -> HttpResponseBase:
        from proxy.translate.ollama import ollama_tags  # loaded on use (proxy.exchange)

        catalog = await current_catalog()
        models = [(name, catalog.owner(name)) for name in catalog.listed_models() if may_use(catalog, ctx, name)]
        return JsonResponse(ollama_tags(models, modified_at=timezone.now().isoformat()))

    return await answer_in_envelope(request, ApiFormat.OLLAMA, tags)


async def ollama_version(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"version": OLLAMA_VERSION})


_BY_OPERATION: dict[str, Callable[[HttpRequest], ClientCall]] = {
    "chat/completions": lambda r: dialects.chat_call(r.body),
    "embeddings": lambda r: dialects.embeddings_call(r.body),
    "completions": lambda r: dialects.completions_call(r.body),
    "responses": lambda r: dialects.responses_call(r.body),
    "messages": lambda r: dialects.messages_call(r.body, r.headers, r.META.get("QUERY_STRING", "")),
    "messages/count_tokens": lambda r: dialects.count_tokens_call(r.body, r.headers),
}


async def provider_in_path(request: HttpRequest, provider: str, operation: str) -> HttpResponseBase:
    parse = _BY_OPERATION.get(operation)
    fmt = ApiFormat.ANTHROPIC if operation.startswith("messages") else ApiFormat.OPENAI
    if parse is None:
        error = GatewayError(404, "not_found", f"Unknown operation '/v1/{operation}'.")
        return HttpResponse(error.body(fmt), status=404, content_type="application/json")
    if refused := _post_only(request):
        return refused

    async def handle(ctx: TenantContext) -> HttpResponseBase:
        call = parse(request)
        call = dataclasses.replace(call, body={**call.body, "model": f"{provider}/{call.body['model']}"})
        return await _forward(request, ctx, call)

    return await answer_in_envelope(request, fmt, handle)
