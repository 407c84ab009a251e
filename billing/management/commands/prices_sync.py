from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper

from billing.price_file import PriceSyncError
from billing.sync import SyncResult, prices_sync


class ProgressBar:
    """`[##########----------] 1234/2000 models` redrawn on one line of a
    terminal. Silent when the stream is not a terminal (cron, a pipe, a log
    file), where carriage returns would only leave clutter."""

    WIDTH = 30

    def __init__(self, out: OutputWrapper, *, enabled: bool = True) -> None:
        self.out = out
        self.enabled = enabled and out.isatty()
        self.drawn = -1  # the filled width last drawn

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        filled = self.WIDTH * done // total
        # Redraw only when the bar grows (and at the end): thousands of writes would slow the sync.
        if filled == self.drawn and done != total:
            return
        self.drawn = filled
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        # str, not the default error style: the bar is not an error.
        self.out.write(f"\r[{bar}] {done}/{total} models", style_func=str, ending="\n" if done == total else "")
        self.out.flush()


class Command(BaseCommand):
    help = (
        "Sync model prices from LiteLLM's pricing file (default: settings.BILLING_PRICES_URL). "
        "Reports what was added, changed, unchanged and skipped; hand-set prices are left alone."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        source = parser.add_mutually_exclusive_group()
        source.add_argument("--url", help="An http(s) or file:// URL of the pricing file.")
        source.add_argument("--file", type=Path, help="A local copy of the pricing file.")

    def handle(self, *args: Any, url: str | None, file: Path | None, verbosity: int, **options: Any) -> None:
        progress = ProgressBar(self.stderr, enabled=verbosity > 0)
        try:
            result = prices_sync(str(file) if file is not None else url, progress=progress)
        except PriceSyncError as exc:
            raise CommandError(f"price sync failed, nothing changed: {exc}") from None
        self.stdout.write(summary(result, verbose=verbosity >= 2))
        if verbosity >= 2:
            for model, reason in result.skipped.items():
                self.stdout.write(f"skipped {model}: {reason}")


def summary(result: SyncResult, *, verbose: bool) -> str:
    line = ", ".join(f"{name} {count}" for name, count in result.counts().items())
    if result.skipped and not verbose:
        line += " (see --verbosity 2 for reasons)"
    return line
