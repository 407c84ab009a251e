"""Relays an upstream SSE stream to the client as it arrives.

Bytes pass through untouched; the relay only cuts the stream at event
boundaries so the provider's observer can read usage and drop the one event
the gateway itself asked for (and, when output guardrails apply, rewrites
the text of the events they redact: proxy.guardrails.stream). Nothing waits for more than the rest of a
partial event. However a stream ends, proxy.stream_end closes and records it.
"""

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from gateway.kernel.context import Usage
from gateway.kernel.errors import ApiFormat, GatewayError
from gateway.kernel.sse import SSESplitter, event_data
from proxy.guardrails.rules import GuardrailBlockedError
from proxy.guardrails.stream import StreamGuard
from proxy.providers.base import StreamObserver
from proxy.stream_cut import (
    BUDGET_CUT,
    BudgetCutError,
    OutputCap,
    closing_events,
    encoded,
    output_allowance,
    upstream_dialect,
)
from proxy.stream_end import (
    BROKEN_OFF,
    INTERRUPTED,
    SHUTDOWN,
    ByteBudget,
    RecordedStreamingResponse,
    ShutdownCutError,
    broken_off,
    shutdown_check,
    shutdown_event,
    stream_ended,
)
from proxy.upstream import UpstreamTooLargeError
from proxy.usage import UsageRecorder

if TYPE_CHECKING:
    from proxy.exchange import Exchange

log = logging.getLogger(__name__)
INCOMPLETE = "upstream_stream_incomplete"


async def relay_stream(
    response: aiohttp.ClientResponse, observer: StreamObserver, recorder: UsageRecorder, fmt: ApiFormat
) -> AsyncIterator[bytes]:
    """Yield the upstream's events; record usage however the stream ends.

    The `finally` runs on normal end, on upstream failure and when the
    client disconnects (CancelledError or GeneratorExit at the next await);
    it closes the upstream connection so the provider stops generating.
    """
    splitter = SSESplitter()
    completed = False
    error_code = ""
    budget = ByteBudget(recorder)
    guard = _output_guard(recorder)
    cap = _output_cap(recorder, observer)
    cut: Usage | None = None
    try:
        async for chunk in response.content.iter_any():
            recorder.first_token()
            budget.spend(chunk)
            shutdown_check()
            events = splitter.feed(chunk)
            if recorder.fill is not None:
                for event in events:
                    recorder.fill.add(event)
            kept, passed = _relayable(events, observer, cap)
            if guard is not None and kept:  # output guardrails: redacted, a match's possible start held
                kept = guard.raw(kept)
            if kept:
                if recorder.trace is not None:  # tracing: the events as the client gets them
                    recorder.trace.add_events(kept)
                yield b"".join(kept)
            if passed:
                raise BudgetCutError
        tail = splitter.rest()
        if guard is not None:  # the text still held, and a last event without its blank line
            tail = b"".join(guard.raw([tail] if tail.strip() else []) + guard.raw_close())
        if not observer.finished:  # closed cleanly, but before its end marker ([DONE], message_stop...)
            error_code = INCOMPLETE
            provider = recorder.target.provider.name
            error = GatewayError(502, error_code, f"The stream from '{provider}' ended before its end marker.")
            yield _traced(recorder, (tail + b"\n\n" if tail.strip() else b"") + error.event(fmt))
        elif tail.strip():
            yield _traced(recorder, tail)
        completed = True
    except BudgetCutError:  # the provider ignored max_tokens: ended here as at max_tokens
        assert cap is not None
        error_code, cut = BUDGET_CUT, cap.usage(recorder.prompt_tokens())
        held = b"".join(guard.raw_close()) if guard is not None else b""
        yield _traced(recorder, held + encoded(recorder.endpoint, closing_events(recorder.endpoint, cap, cut)))
    except UpstreamTooLargeError as too_big:
        error_code = too_big.code
        yield _traced(recorder, too_big.event(fmt))
    except ShutdownCutError:
        error_code = SHUTDOWN
        yield _traced(recorder, shutdown_event(fmt))
    except BROKEN_OFF as exc:
        error_code = INTERRUPTED
        yield _traced(recorder, broken_off(exc, recorder).event(fmt))
    except GuardrailBlockedError as blocked:  # an output guardrail's block: the match never leaves
        error_code = blocked.code
        yield _traced(recorder, blocked.event(fmt))
    finally:
        stream_ended(response, recorder, completed, error_code, usage=cut)


async def translate_stream(
    response: aiohttp.ClientResponse, exchange: "Exchange", recorder: UsageRecorder, fmt: ApiFormat
) -> AsyncIterator[bytes]:
    """Like relay_stream, for an upstream of another dialect: each upstream
    event is observed for usage in its own form, then translated, and the
    client's events are written as they come (never held for the end)."""
    assert exchange.observer is not None and exchange.translators is not None
    observer = exchange.observer
    splitter = SSESplitter()
    completed = False
    error_code = ""
    budget = ByteBudget(recorder)
    guard = _output_guard(recorder)
    cap = _output_cap(recorder, observer)
    cut: Usage | None = None
    try:
        async for chunk in response.content.iter_any():
            recorder.first_token()
            budget.spend(chunk)
            shutdown_check()
            out: list[dict[str, Any]] = []
            passed = False
            for event in splitter.feed(chunk):
                data = event_data(event)
                if data is None:
                    continue
                observer.observe(data)  # [DONE] included: it is what marks an OpenAI stream complete
                if cap is not None and cap.passed(event):
                    passed = True
                    break
                if data == b"[DONE]":
                    continue
                try:
                    parsed = orjson.loads(data)
                except orjson.JSONDecodeError:
                    continue  # nothing a translator could use
                if isinstance(parsed, dict):
                    out += _through(exchange.translators, parsed)
            if out and guard is not None:  # output guardrails, on the client's events
                out = guard.feed_all(out)
            if out:
                if exchange.keeper is not None and exchange.keeper.due:  # see _kept
                    await _kept(exchange, recorder)
                yield _encoded(out, exchange, recorder)
            if passed:
                raise BudgetCutError
        # The translators end the client's stream properly (stop events,
        # usage) once the upstream's has ended; stored before the recorder
        # completes the cache entry.
        closing = _close(exchange.translators)
        if guard is not None:
            closing = guard.feed_all(closing) + guard.close()
        tail = _encoded(closing, exchange, recorder, end=True)
        await _kept(exchange, recorder)
        if not observer.finished:  # the translators closed the client's stream; the books say why
            error_code = INCOMPLETE
        completed = True
    except BudgetCutError:  # ended as the upstream ends at max_tokens, in its dialect, then translated
        assert cap is not None
        error_code, cut = BUDGET_CUT, cap.usage(recorder.prompt_tokens())
        ending = closing_events(upstream_dialect(observer, recorder.endpoint), cap, cut)
        closing = [out for event in ending for out in _through(exchange.translators, event)]
        closing += _close(exchange.translators)
        if guard is not None:
            closing = guard.feed_all(closing) + guard.close()
        yield _traced(recorder, _encoded(closing, exchange, recorder, end=True))
    except UpstreamTooLargeError as too_big:
        error_code = too_big.code
        yield _traced(recorder, too_big.event(fmt))
    except ShutdownCutError:
        error_code = SHUTDOWN
        yield _traced(recorder, shutdown_event(fmt))
    except BROKEN_OFF as exc:
        error_code = INTERRUPTED
        yield _traced(recorder, broken_off(exc, recorder).event(fmt))
    except GuardrailBlockedError as blocked:  # an output guardrail's block: the match never leaves
        error_code = blocked.code
        yield _traced(recorder, blocked.event(fmt))
    except Exception:  # an upstream event no translator expected: end the stream in the client's terms
        log.warning("a stream from %s could not be translated", recorder.target.provider.name, exc_info=True)
        error_code = "upstream_bad_response"
        error = GatewayError(
            502, error_code, f"The stream from '{recorder.target.provider.name}' could not be translated."
        )
        yield _traced(recorder, error.event(fmt))
    finally:
        stream_ended(response, recorder, completed, error_code, usage=cut)
    if completed:
        yield tail


def _output_guard(recorder: UsageRecorder) -> StreamGuard | None:
    """The stream's output guardrails (proxy.guardrails), or None when none apply."""
    return None if recorder.guardrails is None else recorder.guardrails.output_stream()


async def _kept(exchange: "Exchange", recorder: UsageRecorder) -> None:
    """A Responses answer the stream just completed is stored before the
    event that completes it reaches the client (proxy.responses_state): a
    next turn sent at once finds it. Nothing earlier waits for it."""
    if exchange.keeper is not None and exchange.keeper.due:
        await exchange.keeper.keep(recorder.ctx)


def _output_cap(recorder: UsageRecorder, observer: StreamObserver) -> OutputCap | None:
    """The count that cuts the stream past its budget reservation (None: no reservation to protect)."""
    allowance = output_allowance(recorder.reservation, recorder.target.price, recorder.prompt_tokens())
    return None if allowance is None else OutputCap(observer, allowance)


def _relayable(events: list[bytes], observer: StreamObserver, cap: OutputCap | None) -> tuple[list[bytes], bool]:
    """The events to relay (the observer may drop one), up to the one that
    takes the output past the reservation, and whether one did."""
    if cap is None:
        return [e for e in events if _keep(e, observer)], False
    kept: list[bytes] = []
    for event in events:
        if _keep(event, observer):
            if cap.passed(event):
                return kept, True
            kept.append(event)
    return kept, False


def _encoded(
    events: list[dict[str, Any]], exchange: "Exchange", recorder: UsageRecorder, *, end: bool = False
) -> bytes:
    """The client's bytes for these events; each also kept, one by one, for
    the cache entry a successful stream becomes."""
    encoded = [exchange.shape.encode(e) for e in events]
    if end and exchange.shape.end:
        encoded.append(exchange.shape.end)
    if recorder.fill is not None:
        for event in encoded:
            recorder.fill.add(event)
    if recorder.trace is not None:  # tracing: the events as the client gets them
        recorder.trace.add_events(encoded)
    return b"".join(encoded)


def _traced(recorder: UsageRecorder, data: bytes) -> bytes:
    """`data` (a stream's tail or error event), noted by a traced request's capture."""
    if recorder.trace is not None:
        recorder.trace.add_events((data,))
    return data


def _through(translators: "list[Any]", event: dict[str, Any]) -> list[dict[str, Any]]:
    events = [event]
    for translator in translators:
        events = [out for e in events for out in translator.feed(e)]
    return events


def _close(translators: "list[Any]") -> list[dict[str, Any]]:
    """Close each translator in turn, the later ones seeing what the earlier
    ones flushed."""
    pending: list[dict[str, Any]] = []
    for translator in translators:
        pending = [out for e in pending for out in translator.feed(e)] + translator.close()
    return pending


class RelayResponse(RecordedStreamingResponse):
    """An SSE (or NDJSON) stream, relayed or translated event by event."""

    def __init__(
        self,
        response: aiohttp.ClientResponse,
        recorder: UsageRecorder,
        fmt: ApiFormat,
        exchange: "Exchange",
    ) -> None:
        if exchange.translators is not None:
            stream = translate_stream(response, exchange, recorder, fmt)
        else:
            assert exchange.observer is not None
            stream = relay_stream(response, exchange.observer, recorder, fmt)
        super().__init__(stream, response, recorder, exchange.shape.content_type)


def _keep(event: bytes, observer: StreamObserver) -> bool:
    data = event_data(event)
    return data is None or observer.observe(data)
