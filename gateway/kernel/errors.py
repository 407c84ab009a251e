"""Errors as each API's clients expect them.

Every refusal carries a stable machine-readable `code` (`invalid_api_key`,
`model_not_found`, `upstream_timeout`, ...) and is rendered in the envelope
of the API that was called: OpenAI's `{"error": {...}}` on OpenAI routes,
Anthropic's `{"type": "error", "error": {...}}` on `/v1/messages`.
"""

import enum

import orjson
from django.http import HttpResponse

# The `type` each status gets; the names follow Anthropic's list, which
# OpenAI's SDK does not care about (it maps errors by status code).
_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    502: "api_error",
    503: "overloaded_error",
    504: "api_error",
    529: "overloaded_error",  # Anthropic's "overloaded"
}


class ApiFormat(enum.Enum):
    """An error envelope. Which one a request's errors take is its API's to
    say (proxy.apis.registry: by dialect, or by path before the body is
    parsed); how each is written is said here, and only here."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    OLLAMA = "ollama"  # {"error": "message"}, as Ollama answers


def error_type(status: int) -> str:
    return _TYPE_BY_STATUS.get(status, "invalid_request_error" if status < 500 else "api_error")


def error_body(fmt: ApiFormat, *, status: int, code: str, message: str, param: str | None = None) -> bytes:
    kind = error_type(status)
    if fmt is ApiFormat.ANTHROPIC:
        return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})
    if fmt is ApiFormat.OLLAMA:
        return orjson.dumps({"error": message, "code": code})
    return orjson.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}})


def error_event(fmt: ApiFormat, body: bytes) -> bytes:
    """An error body as a stream event: after the first byte an error can
    only travel inside the stream."""
    if fmt is ApiFormat.ANTHROPIC:
        return b"event: error\ndata: " + body + b"\n\n"
    if fmt is ApiFormat.OLLAMA:
        return body + b"\n"
    return b"data: " + body + b"\n\n"


class GatewayError(Exception):
    """A refusal the client should see as-is (status, stable code, message).

    `retryable` says whether the same request may succeed later.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        retryable: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.retryable = retryable
        self.headers = headers or {}

    def body(self, fmt: ApiFormat) -> bytes:
        return error_body(fmt, status=self.status, code=self.code, message=self.message, param=self.param)

    def event(self, fmt: ApiFormat) -> bytes:
        return error_event(fmt, self.body(fmt))


def error_response(error: GatewayError, fmt: ApiFormat) -> HttpResponse:
    """The one way a refusal becomes an HTTP answer: the called API's envelope,
    the error's status and its headers (Retry-After, Allow...)."""
    response = HttpResponse(error.body(fmt), status=error.status, content_type="application/json")
    for name, value in error.headers.items():
        response[name] = value
    return response


def backend_unavailable(what: str) -> GatewayError:
    """A backing service (Redis, the database) is cut or hung: a quick 503 the client may retry."""
    return GatewayError(
        503,
        "backend_unavailable",
        f"The gateway's {what} is unavailable right now; try again shortly.",
        retryable=True,
        headers={"Retry-After": "1"},
    )


def invalid_api_key(message: str = "Invalid API key.") -> GatewayError:
    return GatewayError(401, "invalid_api_key", message)


def invalid_request(message: str, *, param: str | None = None) -> GatewayError:
    return GatewayError(400, "invalid_request", message, param=param)
