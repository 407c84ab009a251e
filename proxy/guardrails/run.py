"""One request's guardrails: the input check, the output guards, the verdicts.

Verdicts are counted by kind and action for the usage record (`summary`:
"pii:redact:2,secrets:flag:1", never the matched text) and reported to
`verdict_listeners` (gateway.metrics counts them by kind, action and stage).
A block also goes to the `guardrail.blocked` webhook (billing.webhooks.emit_soon:
the outbox is written on a thread of its own; the request loop never waits on it).
"""

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import orjson

from gateway.kernel.context import TenantContext
from proxy.apis.registry import spec_for
from proxy.dialects import ClientCall, Dialect
from proxy.guardrails.index import CallerGuardrails, GuardrailIndex
from proxy.guardrails.rules import BLOCK, INPUT, OUTPUT, REDACT, GuardrailBlockedError, GuardrailRule, Hit, redacted
from proxy.guardrails.stream import StreamGuard

log = logging.getLogger(__name__)

# Called with (kind, action, stage, count) for every verdict, on the request's loop: keep them cheap.
verdict_listeners: list[Callable[[str, str, str, int], None]] = []


class _HitAnswer(Protocol):  # proxy.caching.HitAnswer
    body: bytes
    events: list[bytes] | None


class GuardrailRun:
    __slots__ = ("ctx", "dialect", "request_id", "guardrails", "counts")

    def __init__(self, ctx: TenantContext, dialect: Dialect, request_id: str, guardrails: CallerGuardrails) -> None:
        self.ctx = ctx
        self.dialect = dialect
        self.request_id = request_id
        self.guardrails = guardrails
        self.counts: dict[tuple[str, str], int] = {}

    # --- input ---------------------------------------------------------------------
    def check_input(self, call: ClientCall) -> ClientCall:
        """The call to forward: the same, or a copy with its matches redacted.
        Raises GuardrailBlockedError (400 guardrail_blocked) on a block."""
        scanner = self.guardrails.input
        if scanner is None:
            return call
        found = []
        texts = spec_for(call.dialect).texts
        for index, (holder, key) in enumerate(texts.request(call.body)):
            hits = scanner.find(holder[key])
            if hits:
                found.append((index, hits))
        if not found:
            return call
        hits = [hit for _, text_hits in found for hit in text_hits]
        self.settle(hits, INPUT)
        if not any(hit.rule.action == REDACT for hit in hits):
            return call
        body = orjson.loads(orjson.dumps(call.body))  # the client's body stays as it came (the cache keys on it)
        slots = texts.request(body)
        for index, text_hits in found:
            holder, key = slots[index]
            holder[key] = redacted(holder[key], text_hits)
        return dataclasses.replace(call, body=body)

    def check_found(self, text: str) -> tuple[str | None, GuardrailRule | None]:
        """Text the gateway found for the prompt itself (an augmentor's search
        results and pages), through the input guardrails as the client's
        prompt is: `(text redacted, None)`, or `(None, the rule)` when a block
        matched. A block is counted but not raised, and no guardrail.blocked
        event is sent: the client did not write that text, so its request
        goes on without it (proxy.augment)."""
        scanner = self.guardrails.input
        hits = [] if scanner is None else scanner.find(text)
        if not hits:
            return text, None
        blocking = next((hit.rule for hit in hits if hit.rule.action == BLOCK), None)
        if blocking is not None:
            self._count(blocking, INPUT, 1)
            return None, blocking
        self.settle(hits, INPUT)
        return redacted(text, hits), None

    # --- output --------------------------------------------------------------------
    def output_stream(self) -> StreamGuard | None:
        """A stream's guard, or None when no output guardrail applies."""
        scanner = self.guardrails.output
        if scanner is None:
            return None
        return StreamGuard(self.dialect, scanner, lambda hits: self.settle(hits, OUTPUT))

    def output_answer(self, data: bytes) -> bytes:
        """A whole answer's bytes with its matches redacted (the same bytes
        when nothing matched). Raises GuardrailBlockedError on a block."""
        scanner = self.guardrails.output
        if scanner is None or not data:
            return data
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            return data
        slots = spec_for(self.dialect).texts.answer(parsed) if isinstance(parsed, dict) else []
        found = [(slot, hits) for slot in slots if (hits := scanner.find(slot[0][slot[1]]))]
        if not found:
            return data
        self.settle([hit for _, hits in found for hit in hits], OUTPUT)
        changed = False
        for (holder, key), hits in found:
            text = redacted(holder[key], hits)
            changed = changed or text != holder[key]
            holder[key] = text
        return orjson.dumps(parsed) if changed else data

    def cache_hit(self, answer: _HitAnswer) -> str:
        """A cache hit's answer guarded in place (proxy.caching.cache_hit_answer's
        `guard`); the verdicts for its usage record."""
        if self.guardrails.output is not None:
            if answer.events is not None:
                guard = self.output_stream()
                assert guard is not None
                answer.events = guard.raw(answer.events) + guard.raw_close()
            else:
                answer.body = self.output_answer(answer.body)
        return self.summary()

    # --- verdicts ------------------------------------------------------------------
    def settle(self, hits: Sequence[Hit], stage: str) -> None:
        """Count these matches; a block is counted alone and raised."""
        blocking = next((hit.rule for hit in hits if hit.rule.action == BLOCK), None)
        if blocking is not None:
            self._count(blocking, stage, 1)
            self._notify_blocked(blocking, stage)
            raise GuardrailBlockedError(blocking)
        tally: dict[GuardrailRule, int] = {}
        for hit in hits:
            tally[hit.rule] = tally.get(hit.rule, 0) + 1
        for rule, count in tally.items():
            self._count(rule, stage, count)

    def _count(self, rule: GuardrailRule, stage: str, count: int) -> None:
        verdict = (rule.kind, rule.action)
        self.counts[verdict] = self.counts.get(verdict, 0) + count
        for listener in verdict_listeners:
            try:
                listener(rule.kind, rule.action, stage, count)
            except Exception:  # metrics must never fail a request
                log.warning("a guardrail verdict listener failed", exc_info=True)

    def summary(self) -> str:
        """For the usage record: "pii:redact:2,secrets:flag:1"."""
        return ",".join(f"{kind}:{action}:{count}" for (kind, action), count in sorted(self.counts.items()))

    def _notify_blocked(self, rule: GuardrailRule, stage: str) -> None:
        ctx = self.ctx
        payload = {
            "tenant_id": ctx.tenant_id,
            "tenant": ctx.tenant_slug,
            "key_id": ctx.key_id,
            "key_prefix": ctx.key_prefix,
            "guardrail": rule.name,
            "kind": rule.kind,
            "stage": stage,
            "endpoint": self.dialect.value,
            "request_id": self.request_id,
        }
        # Once per guardrail, key and hour: a client retrying a refused prompt is one event, not a storm.
        hour = int(time.time()) // 3600 * 3600
        guardrail_blocked_hand_off(payload, dedupe_key=f"guardrail.blocked:{rule.id}:{ctx.key_id}:{hour}")


def guardrail_run(index: GuardrailIndex, ctx: TenantContext, dialect: Dialect, request_id: str) -> GuardrailRun | None:
    """The request's guardrails, or None when neither its tenant nor its key has any."""
    found = index.for_caller(ctx.tenant_id, ctx.key_id)
    return None if found is None else GuardrailRun(ctx, dialect, request_id, found)


def guardrail_blocked_hand_off(payload: dict[str, Any], *, dedupe_key: str) -> None:
    """The `guardrail.blocked` webhook event: billing.webhooks.emit_soon writes
    the outbox on its own thread, never on this loop."""
    from billing.webhooks import emit_soon  # loaded with the first block, off the request path's imports

    try:
        emit_soon("guardrail.blocked", tenant_id=payload["tenant_id"], dedupe_key=dedupe_key, payload=payload)
    except Exception:  # the refusal stands whatever the webhook's fate
        log.exception("the guardrail.blocked event could not be handed off")


def answer_guarded(guardrails: GuardrailRun | None, data: bytes) -> tuple[bytes, GuardrailBlockedError | None]:
    """A whole answer as the client may see it, or the block that refuses it."""
    if guardrails is None or guardrails.guardrails.output is None or not data:
        return data, None
    try:
        return guardrails.output_answer(data), None
    except GuardrailBlockedError as blocked:
        return b"", blocked
