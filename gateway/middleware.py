"""Async-only middleware for the API handler (no thread hop per request)."""

from collections.abc import Awaitable, Callable

from asgiref.sync import markcoroutinefunction
from django.http import HttpRequest, HttpResponseNotAllowed
from django.http.response import HttpResponseBase

from gateway.kernel.errors import GatewayError, error_response
from gateway.kernel.logs import bind_request_id
from gateway.kernel.requestid import request_id_for
from gateway.metrics import observe_overhead, observe_upstream
from proxy.apis.registry import error_format_for_path
from proxy.timing import RequestTiming, timing_start


def request_id_middleware(
    get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]],
) -> Callable[[HttpRequest], Awaitable[HttpResponseBase]]:
    """Stamp `x-request-id` on every API response, errors included, and on
    every log line written for the request; and `x-gateway-overhead-ms`, the
    time the gateway itself took (not waiting on a provider).

    It also turns the router's bare 405 into the API's error envelope.
    """

    async def middleware(request: HttpRequest) -> HttpResponseBase:
        timing = timing_start()
        request_id = request_id_for(request)
        bind_request_id(request_id)  # every log line of this request carries it
        response = await get_response(request)
        if response.status_code == 405 and isinstance(response, HttpResponseNotAllowed):
            allowed = response["Allow"]
            message = f"{request.method} is not allowed here; use {allowed}."
            error = GatewayError(405, "method_not_allowed", message, headers={"Allow": allowed})
            response = error_response(error, error_format_for_path(request.path))
        for name, value in response_stamps(request_id, timing):
            response[name] = value
        return response

    markcoroutinefunction(middleware)
    return middleware


def response_stamps(request_id: str, timing: RequestTiming) -> tuple[tuple[str, str], tuple[str, str]]:
    """The headers every API answer carries, and the overhead metrics, once
    its headers are ready: a stream's chunks pass through as they come."""
    overhead = timing.overhead()
    observe_overhead(overhead)
    if timing.upstream:
        observe_upstream(timing.upstream)
    return ("x-request-id", request_id), ("x-gateway-overhead-ms", f"{overhead * 1000:.2f}")


request_id_middleware.async_capable = True  # type: ignore[attr-defined]  # Django reads these flags
request_id_middleware.sync_capable = False  # type: ignore[attr-defined]  # off the function
