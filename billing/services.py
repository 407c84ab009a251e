"""Writes for prices."""

import datetime as dt
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from billing.models import Price
from billing.pricing import usd_to_nanos
from proxy.models import Provider


@transaction.atomic
def price_set(
    *,
    model: str,
    input_usd: Decimal,
    output_usd: Decimal,
    cached_input_usd: Decimal | None = None,
    provider: Provider | None = None,
    effective_from: dt.datetime | None = None,
    source: str = Price.Source.MANUAL,
) -> tuple[Price, bool]:
    """Add a price from `effective_from` (default now); returns (price, changed).

    Prices are never edited in place, so past usage keeps the rate it was
    charged at. Setting the price in force again adds nothing.
    """
    for value in (input_usd, output_usd, cached_input_usd):
        if value is not None:
            if value < 0:
                raise ValueError("prices cannot be negative")
            usd_to_nanos(value)  # refuses sub-nano precision before anything is stored
    when = effective_from or timezone.now()
    current = Price.objects.filter(model=model, provider=provider).effective_at(when).order_by("-effective_from").first()
    if current is not None and (
        current.input_usd_per_mtok,
        current.output_usd_per_mtok,
        current.cached_input_usd_per_mtok,
    ) == (input_usd, output_usd, cached_input_usd):
        return current, False
    price = Price.objects.create(
        model=model,
        provider=provider,
        input_usd_per_mtok=input_usd,
        output_usd_per_mtok=output_usd,
        cached_input_usd_per_mtok=cached_input_usd,
        effective_from=when,
        source=source,
    )
    return price, True
