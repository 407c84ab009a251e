"""The NinjaAPI behind /api/ (docs at /api/docs), for staff only.

Errors are `{"error": {"code", "message"}}` with a stable `code`:
`not_authenticated` (401), `staff_required`, `permission_denied` and `csrf_failed` (403),
`not_found` (404), `conflict` and `key_revoked` (409), `invalid_request`
(400), `internal_error` (500).
"""

import logging

from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI, Swagger
from ninja.errors import AuthenticationError, HttpError, ValidationError

from gateway.kernel.errors import GatewayError
from gateway.manage_api import audit_log, budgets, keys, prices, providers, tenants, usage
from gateway.manage_api.auth import staff_auth
from gateway.manage_api.errors import ManagementError, error_response

log = logging.getLogger("gateway.manage_api")

api = NinjaAPI(
    title="LLM Gateway management API",
    version="1",
    description="Tenants, keys, budgets, providers, routes, prices and usage. Staff only: a staff session "
    "(with CSRF on writes) or `Authorization: Bearer <staff token>` (`manage.py staff_token_create USERNAME`).",
    urls_namespace="manage",
    docs_url="/docs",
    docs=Swagger(settings={"validatorUrl": None}),  # no badge fetched from validator.swagger.io
    auth=staff_auth,
)
for module in (tenants, keys, budgets, providers, prices, usage, audit_log):
    api.add_router("", module.router)


@api.exception_handler(ManagementError)
def on_management_error(request: HttpRequest, exc: ManagementError) -> HttpResponse:
    return error_response(exc.status, exc.code, exc.message)


@api.exception_handler(GatewayError)
def on_gateway_error(request: HttpRequest, exc: GatewayError) -> HttpResponse:
    return error_response(exc.status, exc.code, exc.message)  # reused parsers (billing.api's dates)


@api.exception_handler(AuthenticationError)
def on_authentication_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    response = error_response(401, "not_authenticated", "Sign in as staff or send Authorization: Bearer <staff token>.")
    response["WWW-Authenticate"] = "Bearer"
    return response


@api.exception_handler(ValidationError)
def on_validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    first = exc.errors[0] if exc.errors else {}
    where = ".".join(str(p) for p in first.get("loc", ())[1:])
    message = first.get("msg", "Invalid request.")
    return error_response(400, "invalid_request", f"{where}: {message}" if where else message)


@api.exception_handler(HttpError)
def on_http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    if exc.status_code == 403:  # the only HttpError ninja raises itself here: the session's CSRF check
        message = "CSRF check failed: send the csrftoken cookie's value as X-CSRFToken."
        return error_response(403, "csrf_failed", message)
    return error_response(exc.status_code, "invalid_request", str(exc))


@api.exception_handler(Exception)
def on_unexpected_error(request: HttpRequest, exc: Exception) -> HttpResponse:
    log.exception("unhandled error on %s %s", request.method, request.path)
    return error_response(500, "internal_error", "The gateway failed to handle this request.")
