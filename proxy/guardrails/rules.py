"""One stage's guardrails as one scanner: find, settle overlaps, redact."""

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.kernel.errors import GatewayError
from proxy.guardrails.detectors import Detector

BLOCK, REDACT, FLAG = "block", "redact", "flag"
INPUT, OUTPUT = "input", "output"
KINDS = ("secrets", "pii", "regex")
ACTIONS = (BLOCK, REDACT, FLAG)
STAGES = (INPUT, OUTPUT)
_SEVERITY = {BLOCK: 0, REDACT: 1, FLAG: 2}


@dataclass(frozen=True, slots=True, eq=False)
class GuardrailRule:
    """A loaded guardrail: what the request path knows of it."""

    id: int
    name: str
    kind: str
    action: str
    stage: str
    detector: Detector


@dataclass(frozen=True, slots=True)
class Hit:
    start: int
    end: int
    label: str
    rule: GuardrailRule


def placeholder(label: str) -> str:
    return f"[REDACTED:{label}]"


class Scanner:
    """The guardrails of one stage over one text. Where two matches overlap,
    the one that starts first wins, a block before a redaction before a flag,
    then the longer."""

    __slots__ = ("rules", "streamed")

    def __init__(self, rules: Sequence[GuardrailRule]) -> None:
        self.rules = tuple(rules)
        # What a stream can check as it goes (Presidio works on whole texts).
        self.streamed = tuple(r for r in self.rules if r.detector.stream_safe)

    def find(self, text: str) -> list[Hit]:
        return settle([Hit(f.start, f.end, f.label, rule) for rule in self.rules for f in rule.detector.find(text)])

    def scan(self, text: str, start: int) -> tuple[list[Hit], int]:
        """For a stream: the matches in `text` and where its held tail begins."""
        hits: list[Hit] = []
        hold = len(text)
        for rule in self.streamed:
            scan = getattr(rule.detector, "scan", None)
            if scan is not None:
                found, held = scan(text, start)
            else:
                found, held = rule.detector.find(text), rule.detector.hold_from(text, start)
            hits.extend(Hit(f.start, f.end, f.label, rule) for f in found)
            hold = min(hold, held)
        return settle(hits), hold


def settle(hits: list[Hit]) -> list[Hit]:
    """Non-overlapping hits in text order; a block is kept even when it
    overlaps another match (it decides the request)."""
    if len(hits) < 2:
        return hits
    hits.sort(key=lambda h: (h.start, _SEVERITY[h.rule.action], h.start - h.end))
    kept: list[Hit] = []
    end = -1
    for hit in hits:
        if hit.start >= end or hit.rule.action == BLOCK:
            if hit.start < end and kept:  # a block inside another match replaces it
                kept.pop()
            kept.append(hit)
            end = max(end, hit.end)
    return kept


def redacted(text: str, hits: Sequence[Hit], offset: int = 0) -> str:
    """`text` with each redact hit replaced by its placeholder; `offset`:
    where `text` starts in the text the hits were found in."""
    parts: list[str] = []
    at = 0
    for hit in hits:
        if hit.rule.action != REDACT:
            continue
        start, end = hit.start - offset, hit.end - offset
        parts.append(text[at:start])
        parts.append(placeholder(hit.label))
        at = end
    if not parts:
        return text
    parts.append(text[at:])
    return "".join(parts)


class GuardrailBlockedError(GatewayError):
    """A guardrail with action `block` matched: 400 guardrail_blocked, in the
    called API's envelope (or as a stream's error event). Never the matched text."""

    def __init__(self, rule: GuardrailRule) -> None:
        what = "request" if rule.stage == INPUT else "answer"
        super().__init__(
            400,
            "guardrail_blocked",
            f"The {what} was blocked by the guardrail '{rule.name}' ({rule.kind}).",
        )
        self.rule = rule
