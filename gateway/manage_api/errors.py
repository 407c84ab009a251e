"""Errors of the management API: JSON `{"error": {"code", "message"}}` with a stable code."""

import orjson
from django.http import HttpResponse


class ManagementError(Exception):
    """A refusal with an HTTP status and a stable machine-readable code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def not_found(what: str, ident: object) -> ManagementError:
    return ManagementError(404, "not_found", f"No {what} {ident}.")


def conflict(message: str) -> ManagementError:
    return ManagementError(409, "conflict", message)


def error_response(status: int, code: str, message: str) -> HttpResponse:
    body = orjson.dumps({"error": {"code": code, "message": message}})
    return HttpResponse(body, status=status, content_type="application/json")
