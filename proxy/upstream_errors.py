"""A provider's error, as the client gets it (proxy.forward): the same
status and message in the client's envelope, with secrets redacted and the
gateway's own credential problems kept from the client's key.
"""

import re

import aiohttp
import orjson
from django.http import HttpResponse
from django.http.response import HttpResponseBase

from gateway.kernel.context import ProviderConfig
from gateway.kernel.errors import ApiFormat, GatewayError, error_response
from proxy.upstream import UpstreamTooLargeError, read_bounded
from proxy.usage import UsageRecorder

# A key after a word boundary, or a long one glued to the word before it
# ("tokensk-..."): the length keeps words such as "task-runner" readable.
_SECRET_LIKE = re.compile(r"\b(sk|pk|rk|key)-[A-Za-z0-9_\-*.]{6,}|(sk|pk|rk)-[A-Za-z0-9_\-]{20,}")
_MAX_UPSTREAM_MESSAGE = 2000
_MAX_ERROR_BODY = 1024 * 1024  # an error body past this is not read (its message would be cut anyway)
# Upstream headers worth passing on; hop-by-hop and encoding headers never are.
_FORWARDED_HEADERS = ("retry-after", "openai-processing-ms", "x-ratelimit-remaining-requests", "request-id")


async def upstream_error(
    response: aiohttp.ClientResponse, recorder: UsageRecorder, provider: ProviderConfig, fmt: ApiFormat
) -> tuple[HttpResponse, str]:
    """The provider said no: same status and message, in the client's
    envelope, and the error's code. Recording is the caller's (it knows
    whether another attempt follows).

    A 401/403 from the provider means the gateway's credential is wrong, not
    the client's key, so the client sees a 502 instead.
    """
    try:
        # An error's message is cut to a few thousand characters anyway.
        raw = await read_bounded(response, provider.name, limit=_MAX_ERROR_BODY)
    except (TimeoutError, aiohttp.ClientError, UpstreamTooLargeError):
        raw = b""
    except BaseException:  # the client left while the error body was read
        recorder.finish(status=response.status, error_code="client_disconnected", client_disconnected=True)
        raise
    finally:
        response.release()
    message, code, param = upstream_error_details(raw, provider)
    status = response.status
    if status in (401, 403):
        status, code = 502, "upstream_auth_failed"
        message = f"The provider '{provider.name}' rejected the gateway's credential."
    elif status == 529 and fmt is not ApiFormat.ANTHROPIC:
        status = 503  # Anthropic's own "overloaded": other APIs' clients know 503
    error = GatewayError(status, code, message, param=param)
    out = error_response(error, fmt)
    copy_headers(response, out)
    return out, code


def upstream_error_details(raw: bytes, provider: ProviderConfig) -> tuple[str, str, str | None]:
    """The message, code and param of a provider's error body, whatever its shape."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        message = str(error.get("message") or "")
        code = error.get("code") if isinstance(error.get("code"), str) else error.get("type")
        param = error.get("param") if isinstance(error.get("param"), str) else None
    else:
        message = str(error) if isinstance(error, str) else raw.decode("utf-8", "replace")
        code, param = None, None
    # Redact, then cut: cut first, a key straddling the cut would lose the
    # tail the patterns need and leak its first half.
    message = _redact(message.strip(), provider)[:_MAX_UPSTREAM_MESSAGE] or "The provider returned an error."
    return f"Upstream error from '{provider.name}': {message}", code or "upstream_error", param


def _redact(text: str, provider: ProviderConfig) -> str:
    if provider.api_key:
        text = text.replace(provider.api_key, "[redacted]")
    return _SECRET_LIKE.sub("[redacted]", text)


def copy_headers(source: aiohttp.ClientResponse, target: HttpResponseBase) -> None:
    """The upstream's headers worth passing on, onto the client's response."""
    for name in _FORWARDED_HEADERS:
        value = source.headers.get(name)
        if value is not None:
            target[name] = value
