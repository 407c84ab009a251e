"""Health endpoints and JSON error pages."""

from asgiref.sync import sync_to_async
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.defaults import page_not_found

from gateway.kernel.errors import GatewayError, error_response
from proxy.apis.registry import error_format_for_path


async def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up and serving (no dependencies checked)."""
    return JsonResponse({"status": "ok"})


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:
        return False
    finally:
        connection.close()


async def readyz(request: HttpRequest) -> JsonResponse:
    """Ready for traffic: the database answers."""
    database = await sync_to_async(_database_ok, thread_sensitive=False)()
    return JsonResponse(
        {"status": "ok" if database else "unavailable", "checks": {"database": database}},
        status=200 if database else 503,
    )


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if request.path.startswith("/v1/"):
        error = GatewayError(404, "not_found", f"Unknown path {request.path}.")
        return error_response(error, error_format_for_path(request.path))
    return page_not_found(request, exception)
