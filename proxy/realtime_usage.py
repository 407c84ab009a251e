"""A realtime session's books: one usage record per response.

One WebSocket carries many responses. Each `response.done` the provider
sends carries that response's usage (text, audio and cached input, text and
audio output), and leaves one usage record (endpoint `realtime`) through the
same recorder as an HTTP request (proxy.usage.UsageRecorder): priced,
settled against budgets and credit, metered.

Before a client's `response.create` is passed on, the response's worst case
is reserved (proxy.usage.reserve_worst_case). Its prompt is the whole
conversation, which the gateway cannot count exactly, so it is bounded from
above: the context the last `response.done` reported (its input plus its
output, which the next turn reads), plus what the client added since (text
events as one token per byte, audio as one token per AUDIO_BYTES_PER_TOKEN
decoded bytes), plus the session's instructions and tools. A response the
provider starts by itself (server-side turn detection) is reserved when it
is created; one that does not fit is cancelled upstream.
"""

import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

from gateway.kernel.context import RouteTarget, TenantContext, Usage
from gateway.kernel.errors import GatewayError
from proxy.dialects import Dialect
from proxy.providers.base import token_count
from proxy.usage import UsageRecorder, reserve_worst_case

ENDPOINT = "realtime"
# A response.create's params carry the Responses API's `instructions` and
# `input` items: their text and media parts are counted as that API's.
PARAMS_DIALECT = Dialect.RESPONSES
# Decoded audio bytes per token, for the worst case: G.711 at 8 kHz is 800
# bytes per 100 ms, the span of one of OpenAI's input audio tokens; PCM16 at
# 24 kHz is six times as many bytes for the same tokens (a looser bound).
AUDIO_BYTES_PER_TOKEN = 800
_TEXT_DELTAS = frozenset(
    {
        "response.output_text.delta",
        "response.output_audio_transcript.delta",
        "response.text.delta",  # the beta protocol's names
        "response.audio_transcript.delta",
        "response.function_call_arguments.delta",
    }
)
_AUDIO_DELTAS = frozenset({"response.output_audio.delta", "response.audio.delta"})


def usage_from_realtime(usage: Any) -> Usage | None:
    """The realtime API counts cached tokens inside input_tokens and audio
    inside both totals; the ledger's buckets are disjoint. Cached tokens are
    split by `cached_tokens_details` when the provider gives it, else taken
    from text first. Image input is priced as text input."""
    if not isinstance(usage, dict):
        return None
    given_in, given_out = _details(usage, "input_token_details"), _details(usage, "output_token_details")
    audio_in = token_count(given_in.get("audio_tokens"))
    total_in = token_count(usage.get("input_tokens")) or (
        token_count(given_in.get("text_tokens")) + audio_in + token_count(given_in.get("image_tokens"))
    )
    audio_in = min(audio_in, total_in)
    cached = min(token_count(given_in.get("cached_tokens")), total_in)
    split = _details(given_in, "cached_tokens_details")
    if "audio_tokens" in split:
        cached_audio = min(token_count(split.get("audio_tokens")), cached, audio_in)
    else:
        cached_audio = max(0, cached - (total_in - audio_in))
    cached_text = min(cached - cached_audio, total_in - audio_in)
    audio_out = token_count(given_out.get("audio_tokens"))
    total_out = token_count(usage.get("output_tokens")) or token_count(given_out.get("text_tokens")) + audio_out
    audio_out = min(audio_out, total_out)
    return Usage(
        input_tokens=total_in - audio_in - cached_text,
        cached_input_tokens=cached_text + cached_audio,
        audio_input_tokens=audio_in - cached_audio,
        output_tokens=total_out - audio_out,
        audio_output_tokens=audio_out,
    )


def _details(data: dict[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name)
    return value if isinstance(value, dict) else {}


class ResponseObserver:
    """What one response showed as it streamed (proxy.providers.base.StreamObserver):
    an estimate's raw material if it never reports its usage."""

    __slots__ = ("usage", "output_chars", "finished")

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.output_chars = 0
        self.finished = False

    def observe(self, data: bytes) -> bool:
        return True  # events are read by RealtimeBooks, which passes every one on


@dataclass
class _Response:
    recorder: UsageRecorder
    observer: ResponseObserver
    client_event_id: str = ""


class RealtimeBooks:
    """The responses of one session, from reservation to record."""

    def __init__(self, ctx: TenantContext, target: RouteTarget, session_id: str) -> None:
        self.ctx = ctx
        self.target = target
        self.session_id = session_id
        self._asked: deque[_Response] = deque()  # response.create passed on, no response.created yet
        self._open: dict[str, _Response] = {}  # by response id
        self._responses = 0
        self._context_tokens = 0  # the conversation, as the last response.done counted it
        self._added_tokens = 0  # a bound on what the client added since
        self._session_bytes = 0  # the last session.update: instructions and tools are read by every turn
        self._session_max_output: int | None = None

    @property
    def open_responses(self) -> int:
        return len(self._asked) + len(self._open)

    # --- the client's events -------------------------------------------------
    def client_event(self, event: dict[str, Any], size: int) -> None:
        """Count what a client event adds to the conversation (all but response.create)."""
        kind = event.get("type")
        if kind == "input_audio_buffer.append":
            audio = event.get("audio")
            self._added_tokens += (len(audio) * 3 // 4 if isinstance(audio, str) else 0) // AUDIO_BYTES_PER_TOKEN + 1
        elif kind == "session.update":
            session = event.get("session")
            self._session_bytes = size
            if isinstance(session, dict):
                self._session_max_output = _max_output(session)
        else:
            self._added_tokens += size

    async def response_create(self, event: dict[str, Any], size: int) -> None:
        """Reserve a client's response before it is passed on; raises the
        refusal (budget_exceeded, insufficient_credit...)."""
        params = event.get("response")
        params = params if isinstance(params, dict) else {}
        response = await self._reserved(params, extra_tokens=size)
        event_id = event.get("event_id")
        response.client_event_id = event_id if isinstance(event_id, str) else ""
        self._asked.append(response)

    async def _reserved(self, params: dict[str, Any], *, extra_tokens: int = 0) -> _Response:
        prompt = self._context_tokens + self._added_tokens + self._session_bytes + extra_tokens
        output = _max_output(params) or self._session_max_output
        reservation = await reserve_worst_case(
            self.ctx, self.target, params, dialect=PARAMS_DIALECT, prompt_bytes=prompt, output_tokens=output
        )
        return self._response(params, reservation)

    def _response(self, params: dict[str, Any], reservation: Any = None) -> _Response:
        self._responses += 1
        observer = ResponseObserver()
        recorder = UsageRecorder(
            ctx=self.ctx,
            target=self.target,
            endpoint=ENDPOINT,
            dialect=PARAMS_DIALECT,
            request_id=f"{self.session_id}_{self._responses}",
            body=params,
            observer=observer,
            reservation=reservation,
        )
        return _Response(recorder, observer)

    # --- the provider's events -----------------------------------------------
    async def upstream_event(self, event: dict[str, Any]) -> tuple[str, GatewayError] | None:
        """Follow one provider event. Returns (response id, refusal) for a
        response the provider started by itself that the budget cannot take:
        the session cancels it upstream and tells the client."""
        kind = event.get("type")
        if kind in _TEXT_DELTAS or kind in _AUDIO_DELTAS:
            self._delta(event, counted=kind in _TEXT_DELTAS)
        elif kind == "response.created":
            return await self._created(_response_id(event))
        elif kind == "response.done":
            self._done(event.get("response"))
        elif kind == "error":
            self._refused_upstream(event.get("error"))
        return None

    def _delta(self, event: dict[str, Any], *, counted: bool) -> None:
        response = self._open.get(str(event.get("response_id", "")))
        if response is None:
            return
        response.recorder.first_token()
        delta = event.get("delta")
        if counted and isinstance(delta, str):
            response.observer.output_chars += len(delta)

    async def _created(self, response_id: str) -> tuple[str, GatewayError] | None:
        refusal = None
        if self._asked:
            response = self._asked.popleft()
        else:  # started by the provider (turn detection): reserved now
            try:
                response = await self._reserved({})
            except GatewayError as exc:
                response, refusal = self._response({}), (response_id, exc)
        self._open[response_id] = response
        return refusal

    def _done(self, data: Any) -> None:
        data = data if isinstance(data, dict) else {}
        response = self._open.pop(str(data.get("id", "")), None)
        if response is None:  # no response.created seen for it
            response = self._asked.popleft() if self._asked else self._response({})
        usage = usage_from_realtime(data.get("usage"))
        response.observer.finished = True
        status = data.get("status")
        response.recorder.finish(status=200, usage=usage, error_code=_failure_code(data) if status == "failed" else "")
        if usage is not None:  # what the next turn reads: this turn's input and output
            self._context_tokens = usage.total_tokens
            self._added_tokens = 0

    def _refused_upstream(self, error: Any) -> None:
        """The provider refused a response.create (one already in progress,
        say): its reservation ends, and it is recorded, at no cost."""
        error = error if isinstance(error, dict) else {}
        event_id = error.get("event_id")
        for response in list(self._asked) if event_id else ():
            if response.client_event_id == event_id:
                self._asked.remove(response)
                code = error.get("code")
                response.recorder.finish(
                    status=400, error_code=code if isinstance(code, str) and code else "upstream_error"
                )

    def close(self, *, error_code: str, client_disconnected: bool = False) -> None:
        """The session ended: responses still open are recorded with what
        was seen (estimated); ones never started cost nothing."""
        while self._asked:
            self._asked.popleft().recorder.finish(status=200, usage=Usage(), error_code=error_code)
        for response in self._open.values():
            response.recorder.finish(status=200, error_code=error_code, client_disconnected=client_disconnected)
        self._open.clear()


def _response_id(event: dict[str, Any]) -> str:
    response = event.get("response")
    return str(response.get("id", "")) if isinstance(response, dict) else ""


def _max_output(params: dict[str, Any]) -> int | None:
    """A response's (or a session's) output limit; "inf" or none: None."""
    for name in ("max_output_tokens", "max_response_output_tokens"):  # GA, then the beta protocol's name
        value = params.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _failure_code(data: dict[str, Any]) -> str:
    details = data.get("status_details")
    error = details.get("error") if isinstance(details, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) and code else "response_failed"


def client_event_id() -> str:
    """An id for a response.create the client sent without one, so the
    provider's error about it can be matched to it."""
    return "evt_gw_" + uuid.uuid4().hex[:20]
