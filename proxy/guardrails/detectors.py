"""What a detector finds in a text, and how much of a stream's tail it needs held.

A detector is a list of `Pattern`s. Besides its regex, each pattern says the
longest text a match can span (`window`) and, when it can, what every match
looks like at its start (`anchors`: literal prefixes) or throughout (`chars`:
the characters a match is made of). From that, `hold_from` tells a stream how
much of the text seen so far a match could still be growing in: only the tail
from the earliest place a match may have begun and not yet ended. Everything
before it is final and can be sent at once.
"""

import functools
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Found:
    """One match: the span to replace and the placeholder's type."""

    start: int
    end: int
    label: str


class Detector(Protocol):
    """Finds matches in a whole text; a stream-safe one also says what to hold."""

    stream_safe: bool

    def find(self, text: str) -> list[Found]: ...

    def hold_from(self, text: str, start: int) -> int:
        """Where the part of `text` a match could still be growing in begins
        (len(text): nothing); never before `start` (what is before it was sent)."""
        ...


@dataclass(frozen=True)
class Pattern:
    label: str
    regex: re.Pattern[str]
    # The most characters a match spans, with what the regex reads around it
    # (a \b or a lookahead): a stream holds at most this much for this pattern.
    window: int
    # Every match starts with one of these (compared ignoring case when `anchors_ignore_case`)...
    anchors: tuple[str, ...] = ()
    anchors_ignore_case: bool = False
    # ...or consists only of the characters of this class (a regex such as "[\\d -]").
    chars: str = ""
    first: str = ""  # and starts with one of these (a class too; empty: any of `chars`)
    # The length of the matched text that really is one (Luhn, mod 97): 0 for none.
    valid: Callable[[str], int] | None = None
    group: int = 0  # the part of the match replaced (a key, not the `aws_secret_access_key =` before it)
    # From an anchor on: False once the text shows it cannot become a match.
    live: Callable[[str], bool] | None = None
    # How far past a match's end the regex may read before settling on it
    # (1 for a trailing \b or lookahead; the window: it may look to the end).
    lookahead: int = 1
    # The character before a match is no letter, digit or underscore (a
    # leading \b, checked here: a regex that starts with its literal text
    # is searched for many times faster than one that starts with \b).
    word_start: bool = False
    # True for every text that holds a match (one with a digit, say): the
    # pattern is not run on the others.
    needs: Callable[[str], bool] | None = None
    # Where to look instead of everywhere: the regex is matched at these positions.
    starts: Callable[[str], Iterator[int]] | None = None

    def _candidates(self, text: str) -> Iterator[re.Match[str]]:
        if self.needs is not None and not self.needs(text):
            return
        if self.starts is None:
            yield from self.regex.finditer(text)
            return
        done = 0
        for at in self.starts(text):
            if at >= done and (match := self.regex.match(text, at)) is not None:
                yield match
                done = match.end()

    def matches(self, text: str) -> list[tuple[re.Match[str], Found | None]]:
        out: list[tuple[re.Match[str], Found | None]] = []
        for match in self._candidates(text):
            if self.word_start and match.start() and word_char(text[match.start() - 1]):
                continue
            start, end = match.span(self.group)
            if self.valid is not None:
                end = start + self.valid(text[start:end])
            out.append((match, Found(start, end, self.label) if end > start else None))
        return out

    def hold_from(self, text: str, start: int, matches: Sequence[tuple[re.Match[str], Found | None]]) -> int:
        size = len(text)
        floor = max(start, size - self.window)
        pending = size
        for match, _ in matches:
            if self._decided(text, match.end()):
                floor = max(floor, match.end())
            else:  # more text may still change it
                pending = min(pending, match.start())
        if floor >= size:
            return pending
        if self.anchors:
            where = self._anchored(text, floor)
        elif self.chars:
            run = self._trailing_run.search(text, floor)
            begins = None if run is None else self._first_char.search(text, run.start())
            where = size if begins is None else begins.start()
        else:
            where = floor
        return min(where, pending)

    def _decided(self, text: str, end: int) -> bool:
        """Whether more text can no longer change a match ending at `end`: the
        regex read past it what it needed (`lookahead` characters), or, for
        a pattern of `chars`, a character no match has follows it."""
        if self.chars:
            return self._other_char.search(text, end) is not None
        return end + self.lookahead < len(text)

    @functools.cached_property
    def _trailing_run(self) -> re.Pattern[str]:
        return re.compile(self.chars + r"+\Z")

    @functools.cached_property
    def _first_char(self) -> re.Pattern[str]:
        return re.compile(self.first or self.chars)

    @functools.cached_property
    def _other_char(self) -> re.Pattern[str]:
        return re.compile("[^" + self.chars[1:])

    def _anchored(self, text: str, floor: int) -> int:
        """The earliest place at or after `floor` where an anchor begins (or
        the text ends in the start of one) and a match may still follow."""
        size = len(text)
        for found in self._anchor_regex.finditer(text, floor):
            if self.live is None or self.live(text[found.start() :]):
                return found.start()
        partials = self._partials
        if (text[-1].lower() if self.anchors_ignore_case else text[-1]) not in self._partial_ends:
            return size
        tail = text[max(floor, size - self._partial_max) :]
        if self.anchors_ignore_case:
            tail = tail.lower()
        for at in range(len(tail)):
            if tail[at:] in partials:
                return size - len(tail) + at
        return size

    @functools.cached_property
    def _anchor_regex(self) -> re.Pattern[str]:
        flags = re.IGNORECASE if self.anchors_ignore_case else 0
        return re.compile("|".join(re.escape(a) for a in self.anchors), flags)

    @functools.cached_property
    def _partials(self) -> frozenset[str]:
        return frozenset(anchor[:cut] for anchor in self.anchors for cut in range(1, len(anchor)))

    @functools.cached_property
    def _partial_ends(self) -> frozenset[str]:
        return frozenset(partial[-1] for partial in self._partials)

    @functools.cached_property
    def _partial_max(self) -> int:
        return max((len(p) for p in self._partials), default=0)


class PatternDetector:
    """A detector made of patterns; each match keeps its pattern's label."""

    stream_safe = True

    def __init__(self, patterns: Sequence[Pattern]) -> None:
        self.patterns = tuple(patterns)
        self.window = max((p.window for p in self.patterns), default=0)
        self._anchored = tuple(p for p in self.patterns if p.anchors)
        self._others = tuple(p for p in self.patterns if not p.anchors)
        # Every anchor of every anchored pattern at once: when none is in a
        # text (nor begun at its end), none of those patterns can match there.
        exact = [re.escape(a) for p in self._anchored if not p.anchors_ignore_case for a in p.anchors]
        folded = [re.escape(a) for p in self._anchored if p.anchors_ignore_case for a in p.anchors]
        self._any_anchor = re.compile("|".join(exact + ([f"(?i:{'|'.join(folded)})"] if folded else [])) or "(?!)")
        exact_partials = {re.escape(x) for p in self._anchored if not p.anchors_ignore_case for x in p._partials}
        folded_partials = {re.escape(x) for p in self._anchored if p.anchors_ignore_case for x in p._partials}
        ends = "|".join(sorted(exact_partials)) + (
            f"|(?i:{'|'.join(sorted(folded_partials))})" if folded_partials else ""
        )
        self._ends_in_anchor = re.compile(f"(?:{ends.strip('|') or '(?!)'})\\Z")
        self._partial_max = max((p._partial_max for p in self._anchored), default=0)
        # A stream's pieces are short, and most match nothing: one search of
        # every unanchored pattern at once tells, and one more gives the start
        # of the trailing run any of them may still be growing in.
        self._plain = tuple(p for p in self._others if not p.chars)
        charred = [p for p in self._others if p.chars]
        self._none_match = _union([p.regex for p in self._others])
        self._tail_run = re.compile(
            "(?:" + "|".join(f"{p.first or p.chars}{p.chars}*" for p in charred) + r")\Z" if charred else "(?!)"
        )
        self._tail_window = max((p.window for p in charred), default=0)

    def find(self, text: str) -> list[Found]:
        return [found for p in self.patterns for _, found in p.matches(text) if found is not None]

    def scan(self, text: str, start: int) -> tuple[list[Found], int]:
        """The matches and hold_from in one pass over the patterns."""
        found: list[Found] = []
        size = hold = len(text)
        patterns: Sequence[Pattern] = self._others
        if self._anchored:
            # Only a pattern whose anchor is in the text can match in it; the
            # others hold at most the start of an anchor the text ends in.
            if self._any_anchor.search(text) is not None:
                patterns = self.patterns
            begun = self._ends_in_anchor.search(text, max(start, size - self._partial_max))
            if begun is not None:
                hold = begun.start()
        if patterns is self._others and size <= _SHORT and self._none_match.search(text) is None:
            # Nothing matches: what is held is a run a match may be starting in.
            run = self._tail_run.search(text, max(start, size - self._tail_window))
            if run is not None:
                hold = min(hold, run.start())
            for pattern in self._plain:
                hold = min(hold, pattern.hold_from(text, start, ()))
            return found, hold
        for pattern in patterns:
            if pattern.anchors and pattern._anchor_regex.search(text) is None:
                continue
            matches = pattern.matches(text)
            found.extend(f for _, f in matches if f is not None)
            hold = min(hold, pattern.hold_from(text, start, matches))
        return found, hold

    def hold_from(self, text: str, start: int) -> int:
        return self.scan(text, start)[1]


_SHORT = 1024  # the one-search shortcut pays off on a stream's pieces, not on a whole prompt


def _union(regexes: Sequence[re.Pattern[str]]) -> re.Pattern[str]:
    """One regex that matches where any of these does (or never, when that cannot be written)."""
    parts = []
    for regex in regexes:
        pattern = regex.pattern
        if regex.flags & re.IGNORECASE:
            pattern = "(?i:" + pattern.removeprefix("(?i)") + ")"
        parts.append(f"(?:{pattern})")
    try:
        return re.compile("|".join(parts) or "(?!)")
    except re.error:  # back-references, global flags: every pattern is run instead
        return re.compile("(?s:.)|\\A")


def word_char(char: str) -> bool:
    return char.isalnum() or char == "_"
