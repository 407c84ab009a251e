"""Argument types shared by the management commands.

They raise argparse's ArgumentTypeError, which argparse turns into a usage
message; any other exception would reach a shell user as a traceback.
"""

import datetime as dt
import re
from argparse import ArgumentTypeError
from decimal import Decimal, InvalidOperation

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def duration(text: str) -> dt.timedelta:
    """`90s`, `15m`, `12h`, `30d`, `2w`."""
    match = _DURATION.match(text)
    if not match or int(match.group(1)) == 0:
        raise ArgumentTypeError(f"invalid duration {text!r}: use a positive number with s, m, h, d or w, like 30d")
    return dt.timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def usd(text: str | int | float | Decimal) -> Decimal:
    """A non-negative USD amount, exactly as written (never through float)."""
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation:
        raise ArgumentTypeError(f"invalid amount {text!r}: expected a number of USD such as 0.15") from None
    if not value.is_finite() or value < 0:
        raise ArgumentTypeError(f"invalid amount {text!r}: must be a finite number >= 0")
    return value


def names(text: str | None) -> list[str]:
    """`a,b, c` -> ['a', 'b', 'c']."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]
