"""Output guardrails on a stream: a match split across chunks never reaches the client.

Each channel of text (a choice, a content block) keeps only the tail a match
could still be growing in (detectors.Pattern.hold_from: from the earliest
place a match may have begun, at most the longest match). Everything before
it is checked, redacted and sent at once, in the event that brought it. The
held tail goes out with the channel's next piece, or, when the channel ends,
in an event like its last text event, just before the event that ends it.
"""

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import orjson

from gateway.kernel.sse import event_data
from proxy.apis.registry import spec_for
from proxy.apis.spec import CHAT_STREAM
from proxy.apis.texts import ALL
from proxy.dialects import Dialect
from proxy.guardrails.rules import Hit, Scanner, redacted

CONTEXT = 16  # characters of sent text kept for what a pattern reads before a match (\b, lookbehind)

Settle = Callable[[Sequence[Hit]], None]  # counts released matches; raises on a block


class HeldText:
    """One channel's text: what may be sent now, and the tail held back."""

    __slots__ = ("scanner", "settle", "held", "context")

    def __init__(self, scanner: Scanner, settle: Settle) -> None:
        self.scanner = scanner
        self.settle = settle
        self.held = ""
        self.context = ""

    def feed(self, text: str) -> str:
        """The text that can be sent now, redacted."""
        if not text and not self.held:
            return ""
        return self._release(self.context + self.held + text, final=False)

    def flush(self) -> str:
        """The channel ended: the held tail, redacted."""
        return self._release(self.context + self.held, final=True) if self.held else ""

    def _release(self, text: str, *, final: bool) -> str:
        offset = len(self.context)
        hits, cut = self.scanner.scan(text, offset)
        hits = [h for h in hits if h.start >= offset]
        if final:
            cut = len(text)
        for hit in reversed(hits):  # never cut through a match: hold all of it
            if hit.start < cut < hit.end:
                cut = hit.start
        cut = max(cut, offset)
        released = [h for h in hits if h.end <= cut]
        if released:
            self.settle(released)
        self.held = text[cut:]
        self.context = text[max(0, cut - CONTEXT) : cut]
        return redacted(text[offset:cut], released, offset)


class StreamGuard:
    """The output guardrails of one stream in the client's dialect. `feed`
    takes parsed events (a translated stream's), `raw` the bytes of SSE
    events (a stream relayed as the provider sent it); unchanged events keep
    their bytes."""

    def __init__(self, dialect: Dialect, scanner: Scanner, settle: Settle) -> None:
        spec = spec_for(dialect)
        self.shape = spec.stream or CHAT_STREAM  # as the client's API writes a stream
        self.texts = spec.texts  # where its events carry text
        self.scanner = scanner
        self.settle = settle
        self.channels: dict[Hashable, HeldText] = {}
        self.templates: dict[Hashable, dict[str, Any]] = {}

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """`event` (its text redacted in place), after any events that carry
        held text out of the channels it ends."""
        return self._feed(event) or [event]

    def _feed(self, event: dict[str, Any]) -> list[dict[str, Any]] | None:
        """feed(), or None when the event has no text and ends no channel (left as it is)."""
        out: list[dict[str, Any]] = []
        pieces = self.texts.stream(event)
        for channel, (holder, key) in pieces:
            held = self.channels.get(channel)
            if held is None:
                held = self.channels[channel] = HeldText(self.scanner, self.settle)
            holder[key] = held.feed(holder[key])
            self.templates[channel] = event
        ends = self.texts.stream_ends(event)
        echoes = self.texts.stream_echoes(event)
        if not pieces and not ends and not echoes:
            return None
        if ends:
            for channel in list(self.channels) if ends == ALL else [c for c in ends if c in self.channels]:
                tail = self.channels[channel].flush()
                if not tail:
                    continue
                own = next((slot for c, slot in pieces if c == channel), None)
                if own is not None:  # the event that ends the channel carries text itself
                    own[0][own[1]] += tail
                else:
                    out.append(self._carrying(channel, tail))
        for holder, key in echoes:
            holder[key] = redacted(holder[key], self.scanner.scan(holder[key], 0)[0])
        out.append(event)
        return out

    def feed_all(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [out for event in events for out in self.feed(event)]

    def close(self) -> list[dict[str, Any]]:
        """The stream ended without ending its channels: what they still hold."""
        out = []
        for channel, held in self.channels.items():
            tail = held.flush()
            if tail:
                out.append(self._carrying(channel, tail))
        return out

    def _carrying(self, channel: Hashable, tail: str) -> dict[str, Any]:
        """An event like the channel's last text event, with `tail` as its text."""
        copy: dict[str, Any] = orjson.loads(orjson.dumps(self.templates[channel]))
        for other, (holder, key) in self.texts.stream(copy):
            holder[key] = tail if other == channel else ""
        copy.pop("usage", None)
        return copy

    # --- SSE bytes ---------------------------------------------------------------
    def raw(self, events: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        for event in events:
            data = event_data(event)
            if data is None:
                out.append(event)
                continue
            if data == b"[DONE]":
                out += self.raw_close()
                out.append(event)
                continue
            try:
                parsed = orjson.loads(data)
            except orjson.JSONDecodeError:
                out.append(event)
                continue
            fed = self._feed(parsed) if isinstance(parsed, dict) else None
            if fed is None:
                out.append(event)
                continue
            out += [self.encode(e) for e in fed]
        return out

    def raw_close(self) -> list[bytes]:
        return [self.encode(e) for e in self.close()]

    def encode(self, event: dict[str, Any]) -> bytes:
        return self.shape.encode(event)
