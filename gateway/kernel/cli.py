"""Argument types shared by the management commands.

They raise argparse's ArgumentTypeError, which argparse turns into a usage
message; any other exception would reach a shell user as a traceback.
"""

import datetime as dt
import re
from argparse import ArgumentParser, ArgumentTypeError
from decimal import Decimal, InvalidOperation

from django.core.management.base import CommandError

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


def seconds(text: str) -> int:
    """A whole number (of seconds, requests or tokens), 0 or more."""
    if not text.strip().isdigit():
        raise ArgumentTypeError(f"invalid number {text!r}: expected a whole number such as 3600")
    return int(text)


def names(text: str | None) -> list[str]:
    """`a,b, c` -> ['a', 'b', 'c']."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def add_budget_arguments(parser: ArgumentParser) -> None:
    """`--budget USD --budget-period PERIOD`, repeatable in pairs."""
    parser.add_argument(
        "--budget",
        type=usd,
        action="append",
        default=[],
        metavar="USD",
        help="A spending limit; repeat with --budget-period for several (10 a day, 200 a month).",
    )
    parser.add_argument(
        "--budget-period",
        action="append",
        default=[],
        choices=["day", "week", "month", "total"],
        help="The period of the --budget at the same position.",
    )


def budgets(options: dict[str, object]) -> list[tuple[Decimal, str]]:
    limits, periods = options["budget"], options["budget_period"]
    assert isinstance(limits, list) and isinstance(periods, list)
    if len(limits) != len(periods):
        raise CommandError("give each --budget its --budget-period (for example --budget 10 --budget-period day)")
    return list(zip(limits, periods, strict=True))


def add_rate_limit_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("--rpm", type=seconds, default=None, metavar="N", help="Requests per minute.")
    parser.add_argument("--tpm", type=seconds, default=None, metavar="N", help="Tokens per minute.")
    parser.add_argument("--max-parallel", type=seconds, default=None, metavar="N", help="Requests in flight at once.")


def rate_limits(options: dict[str, object]) -> dict[str, object]:
    """The model fields for --rpm, --tpm and --max-parallel."""
    return {"rpm_limit": options["rpm"], "tpm_limit": options["tpm"], "max_parallel": options["max_parallel"]}
