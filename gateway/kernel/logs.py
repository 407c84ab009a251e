"""Structured logs: one JSON object per line (LOG_FORMAT=json).

Each line has `timestamp` (UTC, ISO 8601), `level`, `logger`, `message`,
`request_id` when the line was written while serving a request, `exception`
when there is one, and any `extra={...}` fields. Secrets are redacted from
messages, exceptions and extra fields: keys (`sk-...`), `Bearer` tokens and
fields named like credentials. Log collectors (Loki, CloudWatch, Datadog)
read the lines as they are.
"""

import contextvars
import datetime as dt
import logging
import re
from collections.abc import Callable
from typing import Any

import orjson
from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest
from django.http.response import HttpResponseBase

from gateway.kernel.requestid import request_id_for

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("gateway_request_id", default=None)

REDACTED = "[redacted]"
# Bearer tokens, virtual keys and staff tokens (sk-gw-, sk-gws-), provider keys
# (sk-..., sk-ant-...) and Authorization header values, wherever they appear.
_SECRET_PATTERNS = (
    # (real tokens are long: a display prefix such as "sk-gw-AbCdEf" stays readable)
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{16,}"), r"\1 " + REDACTED),
    # no \b: a key glued to the word before it ("tokensk-...") is a key too
    (re.compile(r"sk-[A-Za-z0-9_-]{20,}"), "sk-" + REDACTED),
    (
        re.compile(
            r"(?i)(\b(?:authorization|x-api-key|api[_-]?key|password|secret|token)[\"']?\s*[:=]\s*[\"']?)"
            r"[^\s\"',}]+"
        ),
        r"\1" + REDACTED,
    ),
)
SECRET_FIELD_NAMES = frozenset(
    {
        "api_key",
        "apikey",
        "key",
        "plaintext",
        "token",
        "secret",
        "password",
        "authorization",
        "digest",
        "api_key_encrypted",
        "credential",
        "x-api-key",
        "x_api_key",
        "cookie",
    }
)

# Attributes every LogRecord has; anything else came in through `extra`.
# uvicorn adds `color_message`, the message with terminal colours: noise in JSON.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",
}


def redact(text: str) -> str:
    """`text` with anything that looks like a credential replaced."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def is_secret_field(name: str) -> bool:
    lowered = name.lower()
    return lowered in SECRET_FIELD_NAMES or lowered.endswith(("_secret", "_token", "_password", "_api_key"))


def redact_value(name: str, value: Any) -> Any:
    """A field's value made safe to store or print: secret fields hidden, strings scrubbed."""
    if is_secret_field(name):
        return REDACTED
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(name, v) for v in value]
    return value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            line["request_id"] = request_id
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exception"] = redact(record.exc_text)
        if record.stack_info:
            line["stack"] = redact(self.formatStack(record.stack_info))
        for name, value in vars(record).items():
            if name not in _RECORD_ATTRIBUTES and name not in line:
                line[name] = redact_value(name, value)
        return orjson.dumps(line, default=str).decode()


def bind_request_id(request_id: str | None) -> None:
    """Tag every log line written from here on in this context (one request's task)."""
    request_id_var.set(request_id)


def request_context_middleware(
    get_response: Callable[[HttpRequest], Any],
) -> Callable[[HttpRequest], Any]:
    """Give the request its id before anything logs, so every line carries it.

    Django serves each ASGI request in a task of its own, whose context is a
    copy: the value set here cannot leak into another request. It is not
    reset on the way out, so lines written while a stream is sent keep it.
    """
    if iscoroutinefunction(get_response):

        async def async_middleware(request: HttpRequest) -> HttpResponseBase:
            bind_request_id(request_id_for(request))
            return await get_response(request)

        markcoroutinefunction(async_middleware)
        return async_middleware

    def sync_middleware(request: HttpRequest) -> HttpResponseBase:
        bind_request_id(request_id_for(request))
        response: HttpResponseBase = get_response(request)
        return response

    return sync_middleware


request_context_middleware.async_capable = True  # type: ignore[attr-defined]  # Django reads these flags
request_context_middleware.sync_capable = True  # type: ignore[attr-defined]  # off the function


def json_logging(logging_config: dict[str, Any]) -> dict[str, Any]:
    """`logging_config` (Django's LOGGING) with its console writing JSON lines.

    The servers' own loggers (uvicorn's access log, daphne) are routed to the
    same handler, so the whole stream is JSON.
    """
    config = {**logging_config}
    config["formatters"] = {**config.get("formatters", {}), "json": {"()": "gateway.kernel.logs.JsonFormatter"}}
    config["handlers"] = {name: {**handler} for name, handler in config.get("handlers", {}).items()}
    config["handlers"]["console"] = {
        **config["handlers"].get("console", {"class": "logging.StreamHandler"}),
        "formatter": "json",
    }
    loggers = {**config.get("loggers", {})}
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        loggers[name] = {"handlers": ["console"], "propagate": False, "level": "INFO"}
    config["loggers"] = loggers
    return config
