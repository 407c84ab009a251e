"""A guardrail's own pattern: checked when it is saved, compiled once when it loads.

A stream holds back at most the longest text the pattern can match (read from
the compiled pattern), bounded by REGEX_WINDOW_MAX; a pattern that starts with
literal text is held only from where that text appears.
"""

import importlib
import re
from typing import Any

from proxy.guardrails.detectors import Pattern, PatternDetector

PATTERN_MAX = 1000  # characters of the pattern itself
# The most a stream holds for one user pattern: a match longer than this (a
# pattern with an open-ended `+` or `*`) can be missed when a stream splits it.
REGEX_WINDOW_MAX = 256


def pattern_error(pattern: str) -> str | None:
    """Why `pattern` cannot be a guardrail's, or None when it can."""
    if not pattern:
        return "a regex guardrail needs a pattern (--pattern)"
    if len(pattern) > PATTERN_MAX:
        return f"the pattern is longer than {PATTERN_MAX} characters"
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        return f"invalid regular expression: {exc}"
    if compiled.search("") is not None:
        return "the pattern matches the empty text; it would match everywhere"
    return None


def placeholder_label(name: str) -> str:
    """A guardrail name as a placeholder type: `internal-ids` -> INTERNAL_IDS."""
    return re.sub(r"[^A-Z0-9]+", "_", name.upper()).strip("_") or "REGEX"


def _width(compiled: re.Pattern[str]) -> int:
    try:
        _parser: Any = importlib.import_module("re._parser")
        widest = int(_parser.parse(compiled.pattern, compiled.flags).getwidth()[1])
    except Exception:  # a Python without the parser's API: assume the bound
        return REGEX_WINDOW_MAX
    return min(widest + 2, REGEX_WINDOW_MAX)  # + what a \b or lookaround reads on either side


def _literal_prefix(compiled: re.Pattern[str]) -> str:
    """The literal text every match starts with ("" when there is none or it may vary in case)."""
    if compiled.flags & re.IGNORECASE:
        return ""
    try:
        _parser: Any = importlib.import_module("re._parser")
        _constants: Any = importlib.import_module("re._constants")
        items: Any = _parser.parse(compiled.pattern, compiled.flags)
        prefix = []
        for op, value in items:
            if op is not _constants.LITERAL:
                break
            prefix.append(chr(value))
        return "".join(prefix)
    except Exception:
        return ""


def regex_detector(name: str, pattern: str) -> PatternDetector:
    """The detector of a regex guardrail; its matches are `[REDACTED:<NAME>]`.
    Raises ValueError for a pattern pattern_error refuses."""
    error = pattern_error(pattern)
    if error is not None:
        raise ValueError(error)
    compiled = re.compile(pattern)
    prefix = _literal_prefix(compiled)
    window = _width(compiled)
    # Nothing is known of how far such a pattern reads past a match: any
    # match within the window may still change.
    return PatternDetector(
        [
            Pattern(
                placeholder_label(name), compiled, window=window, anchors=(prefix,) if prefix else (), lookahead=window
            )
        ]
    )
