"""Personal data: e-mail, phone, payment cards, IBAN and national ids.

A card number must pass the Luhn check and an IBAN its mod-97 check, so an
order number or a random 16-digit string is left alone. When Microsoft
Presidio (`presidio-analyzer`) is installed, its recognizers run as well on
whole texts (requests and JSON answers); streams use the patterns here, whose
matches a stream can hold back.
"""

import functools
import logging
import re
from collections.abc import Iterator
from typing import Any

from proxy.guardrails.detectors import Found, Pattern, PatternDetector

log = logging.getLogger(__name__)


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of a card number (digits only)."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _card_length(text: str) -> int:
    digits = re.sub(r"[ -]", "", text)
    return len(text) if 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn_valid(digits) else 0


def iban_valid(compact: str) -> bool:
    """ISO 13616: the country code and check digits moved to the end, letters
    as numbers (A=10), the whole modulo 97 is 1."""
    if not 15 <= len(compact) <= 34 or not compact[:2].isalpha() or not compact[2:4].isdigit():
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in moved)) % 97 == 1


def _iban_length(text: str) -> int:
    """The longest prefix that is an IBAN, ending where a group ends: a word
    written after an IBAN in groups of four may have been taken for one more."""
    ends = [m.start() for m in re.finditer(" ", text)] + [len(text)]
    for end in reversed(ends):
        if iban_valid(text[:end].replace(" ", "")):
            return end
    return 0


def _phone_length(text: str) -> int:
    digits = sum(char.isdigit() for char in text)
    return len(text) if 8 <= digits <= 15 else 0


# The characters each kind of match is made of (a stream holds a trailing run of them).
_EMAIL_CHARS = r"[A-Za-z0-9._%+@-]"
_PHONE_CHARS = r"[\d +.()-]"
_CARD_CHARS = r"[\d -]"
_ID_CHARS = r"[A-Z\d ]"


def _email_starts(text: str) -> Iterator[int]:
    """Where an e-mail address around each `@` would begin: the run of
    local-part characters before it (at most 64)."""
    at = text.find("@")
    while at != -1:
        start = at
        while start > 0 and at - start < 64 and _local_char(text[start - 1]):
            start -= 1
        if start < at:
            yield start
        at = text.find("@", at + 1)


def _local_char(char: str) -> bool:
    return char.isascii() and (char.isalnum() or char in "._%+-")


def _ssn_length(text: str) -> int:
    area, group, serial = text.split("-")
    return 0 if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000" else len(text)


_DIGIT = re.compile(r"\d")
_DIGITS = re.compile(r"\d+")


def _has_digit(text: str) -> bool:
    return _DIGIT.search(text) is not None


# Every number-shaped pattern starts at, or just before, a run of digits:
# the runs are found once per text (one pass in C) and shared, instead of
# each pattern testing every position of a long prompt.
@functools.lru_cache(maxsize=8)
def _digit_runs(text: str) -> tuple[int, ...]:
    return tuple(m.start() for m in _DIGITS.finditer(text))


def _number_starts(text: str) -> Iterator[int]:
    return iter(_digit_runs(text))


def _phone_starts(text: str) -> Iterator[int]:
    """A digit run, or the `+` or `(` just before one."""
    for at in _digit_runs(text):
        if at and text[at - 1] in "+(":
            yield at - 1
        yield at


def _id_starts(text: str) -> Iterator[int]:
    """Two capital letters before a digit run (an IBAN's country, a national
    insurance number's prefix), with a space between them or not."""
    for at in _digit_runs(text):
        for start in (at - 3, at - 2):
            if start >= 0 and text[start : start + 2].isascii() and text[start : start + 2].isupper():
                if text[start : start + 2].isalpha():
                    yield start


# Each regex starts with what a match starts with (not a lookbehind), which
# Python searches for far faster; the lookbehind follows the first character.
@functools.cache
def pii_patterns() -> tuple[Pattern, ...]:
    return (
        Pattern(
            "EMAIL",
            re.compile(r"(?<![\w.%+-])[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9-]{1,63}\.){1,4}[A-Za-z]{2,24}(?![\w-])"),
            window=360,
            chars=_EMAIL_CHARS,
            first=r"[A-Za-z0-9._%+-]",
            starts=_email_starts,
        ),
        Pattern(
            "PHONE",
            re.compile(
                # +44 20 7946 0958, +1 (555) 123-4567; (555) 123-4567, 555-123-4567, 555.123.4567
                r"(?:\+(?<![\w+]\+)[1-9]\d{0,2}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{1,4}){1,4}"
                r"|\((?<![\w+]\()\d{3}\) ?\d{3}[.-]\d{4}"
                r"|\d(?<![\w+]\d)\d\d[.-]\d{3}[.-]\d{4})(?!\w)"
            ),
            window=40,
            chars=_PHONE_CHARS,
            first=r"[\d+(]",
            valid=_phone_length,
            needs=_has_digit,
            starts=_phone_starts,
        ),
        Pattern(
            "CARD",
            re.compile(r"\d(?<![\d-]\d)(?:[ -]?\d){12,18}(?![\d-])"),
            window=42,
            chars=_CARD_CHARS,
            first=r"\d",
            valid=_card_length,
            needs=_has_digit,
            starts=_number_starts,
        ),
        Pattern(
            "IBAN",
            re.compile(r"[A-Z](?<!\w[A-Z])[A-Z]\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"),
            window=46,
            chars=_ID_CHARS,
            first="[A-Z]",
            valid=_iban_length,
            needs=_has_digit,
            starts=_id_starts,
        ),
        Pattern(
            "US_SSN",
            re.compile(r"\d(?<![\d-]\d)\d\d-\d\d-\d{4}(?![\d-])"),
            window=13,
            chars=_CARD_CHARS,
            first=r"\d",
            valid=_ssn_length,
            needs=_has_digit,
            starts=_number_starts,
        ),
        Pattern(
            "UK_NINO",
            re.compile(r"[A-CEGHJ-PR-TW-Z](?<!\w[A-Z])[A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"),
            window=15,
            chars=_ID_CHARS,
            first="[A-Z]",
            needs=_has_digit,
            starts=_id_starts,
        ),
    )


# Presidio's entities and the placeholder each gets; the noisiest ones
# (dates, URLs, nationalities) are left out.
PRESIDIO_ENTITIES = {
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "CREDIT_CARD": "CARD",
    "IBAN_CODE": "IBAN",
    "US_SSN": "US_SSN",
    "US_PASSPORT": "US_PASSPORT",
    "US_DRIVER_LICENSE": "US_DRIVER_LICENSE",
    "UK_NHS": "UK_NHS",
    "PERSON": "PERSON",
    "IP_ADDRESS": "IP_ADDRESS",
}
PRESIDIO_MIN_SCORE = 0.5


class PiiDetector(PatternDetector):
    """The patterns above, plus Presidio's findings on whole texts when it is installed."""

    def __init__(self, analyzer: Any = None) -> None:
        super().__init__(pii_patterns())
        self.analyzer = analyzer

    def find(self, text: str) -> list[Found]:
        found = super().find(text)
        if self.analyzer is not None and text:
            found += self._presidio(text)
        return found

    def _presidio(self, text: str) -> list[Found]:
        try:
            results = self.analyzer.analyze(text=text, entities=list(PRESIDIO_ENTITIES), language="en")
        except Exception:  # a recognizer's failure must not fail the request: the patterns still ran
            log.warning("presidio could not analyze a text; the built-in patterns alone applied", exc_info=True)
            return []
        return [
            Found(r.start, r.end, PRESIDIO_ENTITIES.get(r.entity_type, r.entity_type))
            for r in results
            if r.score >= PRESIDIO_MIN_SCORE and r.end > r.start
        ]


def presidio_analyzer() -> Any:
    """Presidio's AnalyzerEngine when `presidio_analyzer` can be imported (and
    its language model loads), else None."""
    try:
        from presidio_analyzer import AnalyzerEngine
    except ImportError:
        return None
    try:
        return AnalyzerEngine()
    except Exception:
        log.warning("presidio is installed but could not start; the built-in patterns alone apply", exc_info=True)
        return None


@functools.cache
def pii_detector() -> PiiDetector:
    """Built once per process, when the first catalog with a pii guardrail loads."""
    return PiiDetector(presidio_analyzer())
