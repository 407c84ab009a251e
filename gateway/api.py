"""The NinjaAPI behind /v1: mounts every app's router and renders errors in
the envelope of the API that was called."""

import logging

from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI, Swagger
from ninja.errors import AuthenticationError, HttpError, ValidationError

from billing.api import router as billing_router
from cachestore.api import router as cache_router
from gateway.kernel.errors import GatewayError, error_response
from gateway.metrics import count_refusal
from proxy.api import router as proxy_router
from proxy.apis.registry import error_format_for_path

log = logging.getLogger("gateway.errors")

api = NinjaAPI(
    title="LLM Gateway",
    version="1",
    description="OpenAI-compatible API behind virtual keys.",
    urls_namespace="v1",
    docs_url="/docs",
    # No badge from validator.swagger.io: the docs stay on this host (and work offline).
    docs=Swagger(settings={"validatorUrl": None}),
)
api.add_router("", proxy_router)
api.add_router("", billing_router)
api.add_router("", cache_router)


def _render(request: HttpRequest, status: int, code: str, message: str, param: str | None = None) -> HttpResponse:
    return on_gateway_error(request, GatewayError(status, code, message, param=param))


@api.exception_handler(GatewayError)
def on_gateway_error(request: HttpRequest, exc: GatewayError) -> HttpResponse:
    if not exc.code.startswith("upstream_"):  # those reached an upstream: counted from their usage events
        count_refusal(exc.code)
    return error_response(exc, error_format_for_path(request.path))


@api.exception_handler(AuthenticationError)
def on_authentication_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return _render(request, 401, "invalid_api_key", "Invalid API key.")


@api.exception_handler(ValidationError)
def on_validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    first = exc.errors[0] if exc.errors else {}
    where = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
    return _render(request, 400, "invalid_request", first.get("msg", "Invalid request."), where)


@api.exception_handler(HttpError)
def on_http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    return _render(request, exc.status_code, "invalid_request", str(exc))


@api.exception_handler(Exception)
def on_unexpected_error(request: HttpRequest, exc: Exception) -> HttpResponse:
    # A bug, not the client's fault: log it, tell the client no secrets.
    log.exception("unhandled error on %s %s", request.method, request.path)
    return _render(request, 500, "internal_error", "The gateway failed to handle this request.")
