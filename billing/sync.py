"""The nightly price sync from LiteLLM's public pricing file.

The file (`model_prices_and_context_window.json`) is one JSON object keyed
by model name, with rates in USD per token; a Price row holds USD per
million tokens. A run reads the whole file and converts every entry it
can, saying why it skipped the others (billing.price_file), then writes all
of it in one transaction: it is applied whole or not at all, and every run,
failed or not, leaves a PriceSyncRun behind.

Prices are keyed by model name with no provider. A price set by hand is
never synced over.
"""

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils import timezone

from accounts.signals import config_changes_batched
from billing.models import Price, PriceSyncRun
from billing.price_file import SyncedPrice, prices_convert, prices_parse, source_read
from billing.services import price_set
from billing.webhook_events import price_sync_failed

log = logging.getLogger(__name__)

# (models done, models in all), after each model is written.
ProgressCallback = Callable[[int, int], None]


@dataclass
class SyncResult:
    """What one run did, model by model."""

    source: str
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # model -> reason
    run: PriceSyncRun | None = None

    def counts(self) -> dict[str, int]:
        return {
            "added": len(self.added),
            "changed": len(self.changed),
            "unchanged": len(self.unchanged),
            "skipped": len(self.skipped),
        }


def prices_sync(url: str | None = None, *, progress: ProgressCallback | None = None) -> SyncResult:
    """Sync prices from `url` (http(s), file:// or a path; default
    settings.BILLING_PRICES_URL). Raises PriceSyncError when the file cannot
    be read or is malformed; the failed run is recorded all the same."""
    source = url or settings.BILLING_PRICES_URL
    started_at = timezone.now()
    try:
        document = prices_parse(source_read(source))
        result = SyncResult(source=source)
        prices = prices_convert(document, result.skipped)
        # One config version bump for the run, after the commit, not one per price.
        with config_changes_batched(), transaction.atomic():
            prices_apply(prices, result, now=timezone.now(), progress=progress)
            result.run = _run_record(result, started_at=started_at, ok=True)
    except Exception as exc:
        # After the rollback, so the failure is on record while nothing else is.
        _run_failed(source, started_at=started_at, error=str(exc))
        raise
    return result


def prices_apply(
    prices: list[SyncedPrice], result: SyncResult, *, now: dt.datetime, progress: ProgressCallback | None = None
) -> None:
    """Write the prices that differ from those in force, all effective `now`.
    The caller holds the transaction."""
    sources = _sources_in_force(now)
    for done, price in enumerate(prices, start=1):
        in_force = sources.get(price.model)
        if in_force == Price.Source.MANUAL:
            result.skipped[price.model] = "hand-set price"
        else:
            try:
                _, changed = price_set(
                    model=price.model,
                    input_usd=price.input_usd,
                    output_usd=price.output_usd,
                    cached_input_usd=price.cached_input_usd,
                    provider=None,
                    effective_from=now,
                    source=Price.Source.SYNC,
                    **price.optional,
                )
            except ValueError as exc:  # one absurd entry in the file must not stop the sync
                result.skipped[price.model] = str(exc)
            else:
                bucket = result.unchanged if not changed else result.added if in_force is None else result.changed
                bucket.append(price.model)
        if progress is not None:
            progress(done, len(prices))


def _sources_in_force(now: dt.datetime) -> dict[str, str]:
    """model -> the source of its provider-less price in force at `now`, in
    one query rather than one per model (the file has thousands)."""
    rows = (
        Price.objects.filter(provider=None)
        .effective_at(now)
        .order_by("model", "-effective_from", "-id")
        .values_list("model", "source")
    )
    sources: dict[str, str] = {}
    for model, source in rows:
        sources.setdefault(model, source)  # newest first
    return sources


def _run_record(result: SyncResult, *, started_at: dt.datetime, ok: bool, error: str = "") -> PriceSyncRun:
    return PriceSyncRun.objects.create(
        started_at=started_at,
        source=result.source[: PriceSyncRun._meta.get_field("source").max_length],
        ok=ok,
        **result.counts(),
        error=error,
        details={"skipped": result.skipped},
    )


def _run_failed(source: str, *, started_at: dt.datetime, error: str) -> None:
    """Record a failed run (nothing applied, so every count is zero)."""
    try:
        with transaction.atomic():  # the failed run and its webhook event commit together
            run = _run_record(SyncResult(source=source), started_at=started_at, ok=False, error=error)
            price_sync_failed(run)
    except DatabaseError:
        # The database may be what failed: the caller still gets the original error.
        log.exception("price sync: the failed run could not be recorded")
