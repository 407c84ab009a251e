"""One attempt's whole (non-streamed) answer, to the client (proxy.forward):
read within PROXY_MAX_RESPONSE_BYTES, passed through as it came or
translated to the client's dialect, through the output guardrails, and
recorded once. A stream asked for and answered with anything else is
refused here too. Streams are relayed by proxy.streaming.
"""

import logging
from typing import Any

import aiohttp
import orjson
from django.http import HttpResponse

from gateway.kernel.errors import ApiFormat, GatewayError, error_response
from proxy.exchange import Exchange
from proxy.guardrails.run import answer_guarded
from proxy.stream_cut import BUDGET_CUT, answer_overran
from proxy.timing import upstream_waited
from proxy.upstream import UpstreamTooLargeError, read_bounded, upstream_failure
from proxy.upstream_errors import copy_headers, upstream_error_details
from proxy.usage import UsageRecorder

log = logging.getLogger(__name__)


async def pass_through(
    response: aiohttp.ClientResponse, recorder: UsageRecorder, exchange: Exchange, fmt: ApiFormat, sent: float
) -> HttpResponse:
    """The upstream's 2xx JSON answer as the client's (translated when the
    dialects differ), recorded with its usage."""
    data = await _read_answer(response, recorder)
    upstream_waited(sent)  # from the request sent to the whole answer read
    try:
        parsed: Any = orjson.loads(data)
    except orjson.JSONDecodeError:
        parsed = None
    try:
        usage = exchange.usage_from_json(parsed)
    except Exception:  # JSON of a shape nobody expected: estimate
        usage = None
    overran = _overran(recorder, usage)
    if not exchange.translated:
        # Output guardrails: the client gets `shown`; the cache keeps the answer as it came.
        shown, blocked = answer_guarded(recorder.guardrails, data)
        price = exchange.answer_price(parsed) if exchange.answer_price is not None else None  # images: size, quality
        recorder.finish(
            status=response.status, usage=usage, body=data, error_code=blocked.code if blocked else overran, price=price
        )
        if blocked is not None:
            return error_response(blocked, fmt)
        content_type = response.headers.get("Content-Type", "application/json")
        out = HttpResponse(shown, status=response.status, content_type=content_type)
    else:
        answer = _translated_answer(parsed, exchange, recorder)
        shown, blocked = answer_guarded(recorder.guardrails, answer)
        recorder.finish(
            status=response.status,
            usage=usage,
            body=answer if answer else None,
            error_code=(overran if blocked is None else blocked.code) if answer else "upstream_bad_response",
        )
        if blocked is not None:
            return error_response(blocked, fmt)
        if not answer:
            error = GatewayError(
                502,
                "upstream_bad_response",
                f"The provider '{recorder.target.provider.name}' sent an answer that is not the JSON its API defines.",
            )
            return error_response(error, fmt)
        if exchange.keeper is not None:  # stored before the client has it (proxy.responses_state)
            await exchange.keeper.keep(recorder.ctx)
        out = HttpResponse(shown, status=response.status, content_type="application/json")
    copy_headers(response, out)
    return out


def _overran(recorder: UsageRecorder, usage: Any) -> str:
    """BUDGET_CUT when a whole answer cost more than its reservation (the
    provider ignored max_tokens): its true cost is recorded all the same."""
    if not answer_overran(recorder.reservation, recorder.target.price, usage):
        return ""
    log.warning(
        "%s answered past the budget reservation of request %s (max_tokens ignored?)",
        recorder.target.provider.name,
        recorder.request_id,
    )
    return BUDGET_CUT


async def _read_answer(response: aiohttp.ClientResponse, recorder: UsageRecorder) -> bytes:
    """The upstream's whole answer, within PROXY_MAX_RESPONSE_BYTES; a failure
    to read it is recorded and raised as the client's error."""
    provider = recorder.target.provider.name
    try:
        data = await read_bounded(response, provider)
    except UpstreamTooLargeError as too_big:
        response.close()  # not worth reading to its end: drop the connection
        recorder.finish(status=too_big.status, error_code=too_big.code)
        raise
    except (TimeoutError, aiohttp.ClientError) as exc:
        response.close()
        error = upstream_failure(exc, provider)
        recorder.finish(status=error.status, error_code=error.code)
        raise error from None
    except BaseException:
        response.close()
        recorder.finish(status=499, error_code="client_disconnected", client_disconnected=True)
        raise
    response.release()
    return data


async def not_a_stream(response: aiohttp.ClientResponse, recorder: UsageRecorder, fmt: ApiFormat) -> HttpResponse:
    """A stream was asked for and the upstream answered 2xx with something
    else. Relaying it would hand an SSE client a body it cannot parse: an
    error object becomes the client's error; a complete non-streamed answer
    is refused (`upstream_not_streamed`: a provider that ignores `stream`
    should be called without it); anything else (HTML from a proxy in
    front of the provider, say) is `upstream_bad_response`."""
    provider = recorder.target.provider
    data = await _read_answer(response, recorder)
    try:
        parsed: Any = orjson.loads(data)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict) and parsed.get("error"):
        message, code, param = upstream_error_details(data, provider)
        error = GatewayError(502, code, message, param=param)
    elif isinstance(parsed, dict):
        error = GatewayError(
            502,
            "upstream_not_streamed",
            f"The provider '{provider.name}' answered a streamed request with a whole, non-streamed answer.",
        )
    else:
        kind = response.content_type or "no content type"
        error = GatewayError(
            502,
            "upstream_bad_response",
            f"The provider '{provider.name}' answered a streamed request with {kind} instead of server-sent events.",
        )
    recorder.finish(status=error.status, error_code=error.code)
    out = error_response(error, fmt)
    copy_headers(response, out)
    return out


def _translated_answer(parsed: Any, exchange: Exchange, recorder: UsageRecorder) -> bytes:
    """The client's JSON for the upstream's, or b"" when it cannot be read."""
    assert exchange.answer_json is not None
    if not isinstance(parsed, dict):
        return b""
    try:
        return orjson.dumps(exchange.answer_json(parsed))
    except Exception:
        log.warning("an answer from %s could not be translated", recorder.target.provider.name, exc_info=True)
        return b""
