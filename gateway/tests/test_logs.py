"""LOG_FORMAT=json: one parseable object per line, with the request id and without secrets."""

import contextvars
import io
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory

from gateway.kernel.logs import JsonFormatter, json_logging, redact, request_context_middleware
from gateway.kernel.requestid import request_id_for


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """Everything logged to the "test.json" logger, as JSON lines."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.json")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield stream
    logger.removeHandler(handler)


def parsed(stream: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def logging_view(request: HttpRequest) -> HttpResponse:
    logging.getLogger("test.json").info("serving %s", request.path)
    return HttpResponse()


def test_a_line_written_while_serving_a_request_carries_its_id(lines: io.StringIO) -> None:
    request = RequestFactory().get("/v1/models")
    contextvars.copy_context().run(request_context_middleware(logging_view), request)
    [line] = parsed(lines)
    assert set(line) == {"timestamp", "level", "logger", "message", "request_id"}
    assert (line["level"], line["logger"], line["message"]) == ("INFO", "test.json", "serving /v1/models")
    assert line["request_id"] == request_id_for(request) and line["request_id"].startswith("req_")


async def test_the_async_middleware_tags_lines_too(lines: io.StringIO) -> None:
    async def view(request: HttpRequest) -> HttpResponse:
        return logging_view(request)

    request = RequestFactory().get("/v1/chat/completions")
    await request_context_middleware(view)(request)
    assert parsed(lines)[0]["request_id"] == request_id_for(request)


def test_a_line_outside_a_request_has_no_request_id(lines: io.StringIO) -> None:
    contextvars.Context().run(logging.getLogger("test.json").warning, "idle")
    assert "request_id" not in parsed(lines)[0]


def test_an_exception_is_one_field_and_secrets_are_redacted(lines: io.StringIO) -> None:
    key = "sk-gw-" + "A" * 43
    try:
        raise RuntimeError(f"upstream refused Authorization: Bearer {key}")
    except RuntimeError:
        logging.getLogger("test.json").exception("failed for key %s", key, extra={"api_key": key, "model": "gpt-x"})
    [line] = parsed(lines)
    assert line["message"] == "failed for key sk-[redacted]"
    assert line["exception"].startswith("Traceback") and "RuntimeError" in line["exception"]
    assert (line["api_key"], line["model"]) == ("[redacted]", "gpt-x")
    assert key not in lines.getvalue() and "A" * 20 not in lines.getvalue()


def test_redaction_keeps_display_prefixes_and_ordinary_words() -> None:
    assert (
        redact("key sk-gw-AbCdEf revoked; bearer tokens are checked")
        == "key sk-gw-AbCdEf revoked; bearer tokens are checked"
    )
    assert (
        redact('{"x-api-key": "abc123", "password": "hunter2"}')
        == '{"x-api-key": "[redacted]", "password": "[redacted]"}'
    )


def test_json_logging_sends_the_console_and_the_servers_loggers_through_the_json_formatter() -> None:
    base: dict[str, Any] = {
        "version": 1,
        "formatters": {"plain": {"format": "%(message)s"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
        "root": {"handlers": ["console"], "level": "INFO"},
        "loggers": {"django.request": {"level": "ERROR"}},
    }
    config = json_logging(base)
    assert config["handlers"]["console"] == {"class": "logging.StreamHandler", "formatter": "json"}
    assert config["formatters"]["json"] == {"()": "gateway.kernel.logs.JsonFormatter"}
    assert config["loggers"]["uvicorn.access"] == {"handlers": ["console"], "propagate": False, "level": "INFO"}
    assert config["loggers"]["django.request"] == {"level": "ERROR"}
    assert base["handlers"]["console"]["formatter"] == "plain"  # the input is left alone


def test_the_request_id_is_bound_first_on_both_stacks(settings: Any) -> None:
    # The API's only middleware binds it itself (one layer fewer per request).
    assert settings.API_MIDDLEWARE == ["gateway.middleware.request_id_middleware"]
    assert settings.MIDDLEWARE[0] == "gateway.kernel.logs.request_context_middleware"


async def test_an_api_request_logs_with_its_request_id(rf: Any) -> None:
    from gateway.kernel.logs import request_id_var
    from gateway.middleware import request_id_middleware

    seen: list[str | None] = []

    async def view(request: Any) -> Any:
        from django.http import HttpResponse

        seen.append(request_id_var.get())
        return HttpResponse()

    request = rf.get("/v1/models", HTTP_X_REQUEST_ID="req-abc")
    response = await request_id_middleware(view)(request)
    assert seen == [response["x-request-id"]] and seen[0]


def test_log_format_json_configures_json_lines_at_startup() -> None:
    script = "import django, logging; django.setup(); logging.getLogger('boot').warning('ready')"
    env = {"LOG_FORMAT": "json", "DJANGO_SETTINGS_MODULE": "gateway.settings", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    line = orjson.loads(done.stderr.strip().splitlines()[-1])
    assert (line["level"], line["logger"], line["message"]) == ("WARNING", "boot", "ready")


def test_a_basic_authorization_value_is_redacted_whole() -> None:
    import base64

    encoded = base64.b64encode(b"user:sk-gw-" + b"k" * 40).decode()
    assert encoded not in redact(f"Authorization: Basic {encoded}")
    assert redact(f"sent Basic {encoded} upstream") == "sent Basic [redacted] upstream"
