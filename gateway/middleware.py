"""Async-only middleware for the API handler (no thread hop per request)."""

from collections.abc import Awaitable, Callable

from asgiref.sync import markcoroutinefunction
from django.http import HttpRequest
from django.http.response import HttpResponseBase

from proxy.requestid import request_id_for


def request_id_middleware(
    get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]],
) -> Callable[[HttpRequest], Awaitable[HttpResponseBase]]:
    """Stamp `x-request-id` on every API response, errors included."""

    async def middleware(request: HttpRequest) -> HttpResponseBase:
        response = await get_response(request)
        response["x-request-id"] = request_id_for(request)
        return response

    markcoroutinefunction(middleware)
    return middleware


request_id_middleware.async_capable = True  # type: ignore[attr-defined]
request_id_middleware.sync_capable = False  # type: ignore[attr-defined]
