"""A budget that does not trust the provider: a stream is cut once its
output passes what the budget reservation pays for.

The reservation (proxy.usage.reserve_worst_case) assumes the provider stops
at `max_tokens`. One that ignores it would spend past the budget, so the
relay counts the output as it passes (`OutputCap`: a count of text deltas or
the characters over four, whichever is more; no tokenizer) and stops once
relaying more would cost more than was reserved: the reserved output, plus
what the prompt's worst case (its bytes) left unused. The client's stream is
then ended as its API ends a stream at `max_tokens` (`closing_events`:
finish_reason "length" then [DONE]; Anthropic's message_delta with
stop_reason "max_tokens" and message_stop; the Responses API's
response.incomplete), the upstream connection is closed (generation
stops), and the usage row carries `budget_reservation_exceeded` with the
cost of what was relayed. A translated stream gets the same ending in the
upstream's dialect, fed through its translators.
"""

from dataclasses import replace
from typing import Any

import orjson

from billing.caps import Reservation
from billing.pricing import TOKENS_PER_MTOK, audio_rates, cost_nanos
from gateway.kernel.context import PriceSnapshot, Usage, estimate_tokens
from gateway.kernel.sse import event_data
from proxy.apis.registry import spec_for
from proxy.apis.spec import CHAT_STREAM
from proxy.dialects import Dialect
from proxy.providers.anthropic import AnthropicStreamObserver
from proxy.providers.base import StreamObserver
from proxy.providers.openai import ResponsesStreamObserver

BUDGET_CUT = "budget_reservation_exceeded"


class BudgetCutError(Exception):
    """The stream's output passed what its reservation pays for."""


def output_allowance(reservation: Reservation | None, price: PriceSnapshot | None, prompt_tokens: int) -> int | None:
    """The most output tokens the reservation pays for with a prompt of
    about `prompt_tokens` (None: nothing to protect: no budget, or no price)."""
    if reservation is None or price is None:
        return None
    rates = price.rates_for(prompt_tokens)
    output_rate = max(rates.output, rates.reasoning, audio_rates(rates)[1])
    if output_rate <= 0:
        return None  # output is free: no amount of it passes a budget
    room = (reservation.amount - price.request_fee_nanos) * TOKENS_PER_MTOK - prompt_tokens * rates.input
    return max(room // output_rate, 0)


class OutputCap:
    """Counts one stream's output as its events are observed; `passed()`
    after each one. Parses only the few events its ending needs (the first,
    Anthropic's block starts, the Responses API's created)."""

    __slots__ = ("allowance", "observer", "deltas", "chars", "relayed", "head", "open_block", "events")

    def __init__(self, observer: StreamObserver, allowance: int) -> None:
        self.allowance = allowance
        self.observer = observer
        self.deltas = 0  # events that carried output: at least a token each
        self.chars = 0
        self.relayed = 0  # output tokens of what reached the client
        self.head: dict[str, Any] = {}  # the first event (chat), message_start or response.created
        self.open_block: int | None = None  # Anthropic: the content block not stopped yet
        self.events = 0  # relayed so far

    def tokens(self) -> int:
        return max(self.deltas, estimate_tokens(self.chars))

    def passed(self, event: bytes) -> bool:
        """Whether `event`, just observed, takes the output past the
        allowance (it is then not relayed)."""
        chars = self.observer.output_chars
        if chars != self.chars:
            self.deltas += 1
            self.chars = chars
        if self.tokens() > self.allowance:
            return True
        self.relayed = self.tokens()
        self.events += 1  # relayed: the Responses API numbers its events from 0
        if not self.head or b'"content_block_start"' in event or b'"content_block_stop"' in event:
            self._note(event)
        return False

    def _note(self, event: bytes) -> None:
        data = event_data(event)
        if data is None or data == b"[DONE]":
            return
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(parsed, dict):
            return
        kind = parsed.get("type")
        if kind == "content_block_start":
            self.open_block = parsed.get("index") if isinstance(parsed.get("index"), int) else 0
        elif kind == "content_block_stop":
            self.open_block = None
        elif not self.head and kind in (None, "message_start", "response.created"):
            self.head = parsed

    def usage(self, prompt_tokens: int) -> Usage:
        """What was relayed: the input as the upstream reported it (else the
        estimate), and the output counted."""
        seen = self.observer.usage
        if seen is None:
            return Usage(input_tokens=prompt_tokens, output_tokens=self.relayed)
        return replace(seen, output_tokens=self.relayed, reasoning_tokens=0)


def upstream_dialect(observer: StreamObserver, client_dialect: str) -> str:
    """The dialect the upstream streams in: the client's when relayed as
    is; for a translated stream, the one its observer reads."""
    if isinstance(observer, AnthropicStreamObserver):
        return "messages"
    if isinstance(observer, ResponsesStreamObserver):
        return "responses"
    return client_dialect if client_dialect in ("chat.completions", "completions") else "chat.completions"


def closing_events(dialect: str, cap: OutputCap, usage: Usage) -> list[dict[str, Any]]:
    """The events that end a `dialect` stream at the output limit."""
    head = cap.head
    if dialect == "messages":
        events: list[dict[str, Any]] = []
        if cap.open_block is not None:
            events.append({"type": "content_block_stop", "index": cap.open_block})
        delta = {"stop_reason": "max_tokens", "stop_sequence": None}
        events.append({"type": "message_delta", "delta": delta, "usage": {"output_tokens": usage.output_tokens}})
        return [*events, {"type": "message_stop"}]
    if dialect == "responses":
        response = dict(head.get("response") or {}) if isinstance(head.get("response"), dict) else {}
        response.update(
            status="incomplete",
            incomplete_details={"reason": "max_output_tokens"},
            usage={
                "input_tokens": usage.prompt_tokens,
                "output_tokens": usage.output_tokens,
                "total_tokens": usage.prompt_tokens + usage.output_tokens,
            },
        )
        return [{"type": "response.incomplete", "sequence_number": cap.events, "response": response}]
    base: dict[str, Any] = {name: head[name] for name in ("id", "created", "model") if name in head}
    if dialect == "completions":
        choice: dict[str, Any] = {"text": "", "index": 0, "logprobs": None, "finish_reason": "length"}
        return [{**base, "object": "text_completion", "choices": [choice]}]
    choice = {"index": 0, "delta": {}, "finish_reason": "length"}
    return [{**base, "object": "chat.completion.chunk", "choices": [choice]}]


def encoded(dialect: str, events: list[dict[str, Any]]) -> bytes:
    """Server-sent events as `dialect` writes them, and its stream's end (a
    chat or completions stream ends with [DONE])."""
    shape = spec_for(Dialect(dialect)).stream or CHAT_STREAM
    return b"".join(map(shape.encode, events)) + shape.end


def answer_overran(reservation: Reservation | None, price: PriceSnapshot | None, usage: Usage | None) -> bool:
    """Whether a whole (non-streamed) answer cost more than was reserved:
    it cannot be unsent, so its true cost is recorded, with BUDGET_CUT."""
    if reservation is None or usage is None:
        return False
    return cost_nanos(usage, price) > reservation.amount
