"""Forwarding one request upstream and answering the client.

The order of work: parse -> route -> call the provider -> relay (stream) or
pass through (JSON) -> one usage event, however it ends.
"""

import asyncio
import re
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from django.http import HttpResponse
from django.http.response import HttpResponseBase

from proxy.caching import CacheFill, cache_hit_response, cache_lookup
from proxy.catalog import current_catalog
from proxy.context import ProviderConfig, RouteTarget, TenantContext
from proxy.errors import ApiFormat, GatewayError, invalid_request
from proxy.providers import adapter_for
from proxy.ratelimit import Admission, rate_limit_admit, rate_limit_release, tokens_estimate
from proxy.routing import route_for
from proxy.streaming import RelayResponse
from proxy.upstream import upstream_failure, upstream_session
from proxy.usage import UsageRecorder, reserve_worst_case

_SECRET_LIKE = re.compile(r"\b(sk|pk|rk|key)-[A-Za-z0-9_\-*.]{6,}")
_MAX_UPSTREAM_MESSAGE = 2000
MODEL_NAME_MAX = 200  # the ledger's column
# Upstream headers worth passing on; hop-by-hop and encoding headers never are.
_FORWARDED_HEADERS = ("retry-after", "openai-processing-ms", "x-ratelimit-remaining-requests")


def _json_object_with_model(raw: bytes, what: str) -> dict[str, Any]:
    if not raw.strip():
        raise invalid_request(f"The request body is empty; expected a JSON {what}.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(400, "invalid_json", f"The request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise invalid_request("'model' is required and must be a non-empty string.", param="model")
    if len(model) > MODEL_NAME_MAX or not model.isprintable():
        raise invalid_request(f"'model' must be at most {MODEL_NAME_MAX} printable characters.", param="model")
    return body


def embeddings_body_parse(raw: bytes) -> dict[str, Any]:
    body = _json_object_with_model(raw, "embeddings request")
    text = body.get("input")
    if not (isinstance(text, str) and text) and not (isinstance(text, list) and text):
        raise invalid_request("'input' is required: a string, or a non-empty array of strings or tokens.", param="input")
    return body


def chat_body_parse(raw: bytes) -> dict[str, Any]:
    """The client's JSON body, checked just enough to route it."""
    body = _json_object_with_model(raw, "chat completion request")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid_request("'messages' is required and must be a non-empty array.", param="messages")
    if not isinstance(body.get("stream", False), bool):
        raise invalid_request("'stream' must be a boolean.", param="stream")
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise invalid_request(f"'{name}' must be a positive integer.", param=name)
    return body


CHAT = "chat.completions"
EMBEDDINGS = "embeddings"


async def chat_completions_forward(
    ctx: TenantContext, raw: bytes, request_id: str, *, cache_control: str = "", force_cache: bool = False
) -> HttpResponseBase:
    body = chat_body_parse(raw)
    call = UpstreamCall(endpoint=CHAT, body=body, size=len(raw), stream=body.get("stream") is True)
    return await _forward(ctx, call, request_id, cache_control=cache_control, force_cache=force_cache)


async def embeddings_forward(ctx: TenantContext, raw: bytes, request_id: str, *, cache_control: str = "") -> HttpResponseBase:
    body = embeddings_body_parse(raw)
    call = UpstreamCall(endpoint=EMBEDDINGS, body=body, size=len(raw), stream=False, output_tokens=0)
    return await _forward(ctx, call, request_id, cache_control=cache_control, force_cache=False)


@dataclass(frozen=True)
class UpstreamCall:
    endpoint: str
    body: dict[str, Any]
    size: int  # bytes: no prompt has more tokens, so the budget's worst case
    stream: bool
    output_tokens: int | None = None  # known output limit (None: from max_tokens or the model)


async def _forward(
    ctx: TenantContext, call: UpstreamCall, request_id: str, *, cache_control: str, force_cache: bool
) -> HttpResponseBase:
    """Route, admit under the rate limits, answer from the cache when it may,
    else go upstream."""
    target = route_for(await current_catalog(), ctx, call.body["model"])
    admission = await rate_limit_admit(ctx, tokens=tokens_estimate(call.body, call.size))
    fill = None
    try:
        cache = await cache_lookup(ctx, target, call.body, endpoint=call.endpoint, cache_control=cache_control,
                                   forced=force_cache)  # fmt: skip
        if cache.entry is not None:
            response = cache_hit_response(ctx, target, cache.entry, call.body, request_id=request_id, stream=call.stream)
            rate_limit_release(admission)
        else:
            fill = cache.fill
            response = await _upstream(ctx, target, call, request_id, fill, admission)
            response["x-cache"] = cache.status
    except BaseException:
        if fill is not None:
            fill.fail()  # identical requests waiting on this one go upstream themselves
        rate_limit_release(admission)  # a no-op once the request's recorder released it
        raise
    for name, value in (admission.headers if admission else {}).items():
        response[name] = value
    return response


async def _upstream(
    ctx: TenantContext, target: RouteTarget, call: UpstreamCall, request_id: str, fill: CacheFill | None,
    admission: Admission | None,
) -> HttpResponseBase:  # fmt: skip
    adapter = adapter_for(target.provider.kind)
    if call.endpoint == EMBEDDINGS:
        upstream, observer = adapter.embeddings_request(target.provider, target.upstream_model, call.body), None
    else:
        upstream, observer = adapter.chat_request(target.provider, target.upstream_model, call.body, call.stream)
    reservation = await reserve_worst_case(ctx, target, call.body, prompt_bytes=call.size,
                                           output_tokens=call.output_tokens)  # fmt: skip
    recorder = UsageRecorder(
        ctx=ctx, target=target, endpoint=call.endpoint, request_id=request_id, body=call.body,
        observer=observer, reservation=reservation, fill=fill, admission=admission,
    )  # fmt: skip
    try:
        response = await upstream_session().post(upstream.url, data=upstream.body, headers=upstream.headers)
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        error = upstream_failure(exc, target.provider.name)
        recorder.finish(status=error.status, error_code=error.code)
        raise error from None
    except BaseException:  # the client left while the upstream was thinking
        recorder.finish(status=499, error_code="client_disconnected", client_disconnected=True)
        raise

    if response.status >= 400:
        return await _upstream_error(response, recorder, target.provider, ApiFormat.OPENAI)
    if observer is not None and response.content_type == "text/event-stream":
        return RelayResponse(response, observer, recorder, ApiFormat.OPENAI)
    return await _pass_through(response, recorder, adapter)


async def _pass_through(response: aiohttp.ClientResponse, recorder: UsageRecorder, adapter: Any) -> HttpResponse:
    try:
        data = await response.read()
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        error = upstream_failure(exc, recorder.target.provider.name)
        recorder.finish(status=error.status, error_code=error.code)
        raise error from None
    except BaseException:
        recorder.finish(status=499, error_code="client_disconnected", client_disconnected=True)
        raise
    finally:
        response.release()
    try:
        usage = adapter.usage_from_response(orjson.loads(data))
    except Exception:  # not JSON, or JSON of a shape nobody expected: estimate
        usage = None
    recorder.finish(status=response.status, usage=usage, body=data)
    out = HttpResponse(data, status=response.status, content_type=response.headers.get("Content-Type", "application/json"))
    _copy_headers(response, out)
    return out


async def _upstream_error(
    response: aiohttp.ClientResponse, recorder: UsageRecorder, provider: ProviderConfig, fmt: ApiFormat
) -> HttpResponse:
    """The provider said no: same status and message, in the client's envelope.

    A 401/403 from the provider means the gateway's credential is wrong, not
    the client's key, so the client sees a 502 instead.
    """
    try:
        raw = await response.read()
    except (aiohttp.ClientError, asyncio.TimeoutError):
        raw = b""
    except BaseException:  # the client left while the error body was read
        recorder.finish(status=response.status, error_code="client_disconnected", client_disconnected=True)
        raise
    finally:
        response.release()
    message, code, param = _upstream_error_details(raw, provider)
    status = response.status
    if status in (401, 403):
        status, code = 502, "upstream_auth_failed"
        message = f"The provider '{provider.name}' rejected the gateway's credential."
    recorder.finish(status=response.status, error_code=code)
    error = GatewayError(status, code, message, param=param)
    out = HttpResponse(error.body(fmt), status=status, content_type="application/json")
    _copy_headers(response, out)
    return out


def _upstream_error_details(raw: bytes, provider: ProviderConfig) -> tuple[str, str, str | None]:
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
    message = _redact(message.strip()[:_MAX_UPSTREAM_MESSAGE], provider) or "The provider returned an error."
    return f"Upstream error from '{provider.name}': {message}", code or "upstream_error", param


def _redact(text: str, provider: ProviderConfig) -> str:
    if provider.api_key:
        text = text.replace(provider.api_key, "[redacted]")
    return _SECRET_LIKE.sub("[redacted]", text)


def _copy_headers(source: aiohttp.ClientResponse, target: HttpResponseBase) -> None:
    for name in _FORWARDED_HEADERS:
        value = source.headers.get(name)
        if value is not None:
            target[name] = value

