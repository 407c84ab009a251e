"""The loaded guardrails by tenant and key: part of the routing catalog.

proxy.catalog_loader reads the rows and the attachments; `guardrail_index`
builds each guardrail's detector once (a regex compiled once), and the
request path asks `for_caller(tenant id, key id)`: a dict lookup, the
caller's two lists merged and split by stage once, then kept.
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from proxy.guardrails.detectors import Detector
from proxy.guardrails.pii import pii_detector
from proxy.guardrails.regex import regex_detector
from proxy.guardrails.rules import INPUT, OUTPUT, GuardrailRule, Scanner
from proxy.guardrails.secrets import secrets_detector

log = logging.getLogger(__name__)
_CALLERS_MAX = 10_000


@dataclass(frozen=True, slots=True)
class GuardrailRow:
    """A guardrail as the database has it (what the loader reads)."""

    id: int
    name: str
    kind: str
    pattern: str
    action: str
    stage: str


@dataclass(frozen=True, slots=True)
class CallerGuardrails:
    """One caller's guardrails, by stage (None: none on that stage)."""

    input: Scanner | None
    output: Scanner | None


class GuardrailIndex:
    def __init__(
        self, by_tenant: dict[int, tuple[GuardrailRule, ...]], by_key: dict[int, tuple[GuardrailRule, ...]]
    ) -> None:
        self.by_tenant = by_tenant
        self.by_key = by_key
        self._callers: dict[tuple[int, int], CallerGuardrails | None] = {}

    def __bool__(self) -> bool:
        return bool(self.by_tenant or self.by_key)

    def for_caller(self, tenant_id: int, key_id: int) -> CallerGuardrails | None:
        """The guardrails of the tenant and of the key, or None when there are none."""
        if not self.by_tenant and not self.by_key:
            return None
        pair = (tenant_id, key_id)
        try:
            return self._callers[pair]
        except KeyError:
            pass
        rules = {r.id: r for r in (*self.by_tenant.get(tenant_id, ()), *self.by_key.get(key_id, ()))}
        found = None
        if rules:
            ordered = sorted(rules.values(), key=lambda r: r.name)
            stage_input = [r for r in ordered if r.stage == INPUT]
            stage_output = [r for r in ordered if r.stage == OUTPUT]
            found = CallerGuardrails(
                Scanner(stage_input) if stage_input else None, Scanner(stage_output) if stage_output else None
            )
        if len(self._callers) >= _CALLERS_MAX:
            self._callers.clear()
        self._callers[pair] = found
        return found


EMPTY_INDEX = GuardrailIndex({}, {})


def detector_for(kind: str, name: str, pattern: str) -> Detector:
    """Raises ValueError for an unknown kind or a pattern pattern_error refuses."""
    if kind == "secrets":
        return secrets_detector()
    if kind == "pii":
        return pii_detector()
    if kind == "regex":
        return regex_detector(name, pattern)
    raise ValueError(f"unknown guardrail kind {kind!r}")


def guardrail_index(
    rows: Iterable[GuardrailRow],
    tenant_links: Iterable[tuple[int, int]],
    key_links: Iterable[tuple[int, int]],
) -> GuardrailIndex:
    """`*_links`: (guardrail id, tenant or key id). A row that cannot be
    built (a pattern stored before patterns were checked) is left out with
    a log line, never an outage."""
    rules: dict[int, GuardrailRule] = {}
    for row in rows:
        try:
            detector = detector_for(row.kind, row.name, row.pattern)
        except ValueError as exc:
            log.error("guardrail %s skipped: %s", row.name, exc)
            continue
        rules[row.id] = GuardrailRule(row.id, row.name, row.kind, row.action, row.stage, detector)
    return GuardrailIndex(_grouped(rules, tenant_links), _grouped(rules, key_links))


def _grouped(rules: dict[int, GuardrailRule], links: Iterable[tuple[int, int]]) -> dict[int, tuple[GuardrailRule, ...]]:
    grouped: dict[int, list[GuardrailRule]] = {}
    for guardrail_id, owner_id in links:
        rule = rules.get(guardrail_id)
        if rule is not None:
            grouped.setdefault(owner_id, []).append(rule)
    return {owner: tuple(found) for owner, found in grouped.items()}
