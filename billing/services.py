"""Writes for prices, budgets and prepaid credit."""

import datetime as dt
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import Q, Sum
from django.utils import timezone

from accounts.models import ApiKey, Tenant
from accounts.signals import config_version_bump
from billing.models import Budget, BudgetSpend, CreditEntry, Price
from billing.models.budgets import Period
from billing.periods import period_end, period_start
from billing.pricing import price_amount_check, usd_to_nanos
from billing.reconcile import usage_cost_nanos

# The optional rates (USD per million tokens unless named otherwise) a price can carry, by the short
# names the command line and gateway_apply files use.
PRICE_RATE_OPTIONS = {
    "cache_write_5m": "cache_write_5m_usd_per_mtok",
    "cache_write_1h": "cache_write_1h_usd_per_mtok",
    "reasoning": "reasoning_usd_per_mtok",
    "audio_input": "audio_input_usd_per_mtok",
    "audio_output": "audio_output_usd_per_mtok",
    "image_input": "image_input_usd_per_mtok",
    "image_output": "image_output_usd_per_mtok",
    # The media endpoints' rates, by LiteLLM's names (USD per second of
    # audio, per character, per image: billing.media_pricing).
    "input_cost_per_second": "input_usd_per_second",
    "input_cost_per_character": "input_usd_per_character",
    "output_cost_per_image": "output_usd_per_image",
    "long_input": "long_input_usd_per_mtok",
    "long_cached_input": "long_cached_input_usd_per_mtok",
    "long_cache_write_5m": "long_cache_write_5m_usd_per_mtok",
    "long_cache_write_1h": "long_cache_write_1h_usd_per_mtok",
    "long_output": "long_output_usd_per_mtok",
}
# The optional fields a price row can carry.
OPTIONAL_PRICE_FIELDS = (
    "cache_write_5m_usd_per_mtok",
    "cache_write_1h_usd_per_mtok",
    "reasoning_usd_per_mtok",
    "audio_input_usd_per_mtok",
    "audio_output_usd_per_mtok",
    "image_input_usd_per_mtok",
    "image_output_usd_per_mtok",
    "input_usd_per_second",
    "input_usd_per_character",
    "output_usd_per_image",
    "long_context_threshold",
    "long_input_usd_per_mtok",
    "long_cached_input_usd_per_mtok",
    "long_cache_write_5m_usd_per_mtok",
    "long_cache_write_1h_usd_per_mtok",
    "long_output_usd_per_mtok",
    "request_fee_usd",
    "max_output_tokens",
)


@transaction.atomic
def price_set(
    *,
    model: str,
    input_usd: Decimal,
    output_usd: Decimal,
    cached_input_usd: Decimal | None = None,
    provider: Any = None,  # a proxy.Provider or None (the Price foreign key names it as a string)
    effective_from: dt.datetime | None = None,
    source: str = Price.Source.MANUAL,
    **optional: Any,
) -> tuple[Price, bool]:
    """Add a price from `effective_from` (default now); returns (price, changed).

    `optional` takes any of OPTIONAL_PRICE_FIELDS. Prices are never edited
    in place, so past usage keeps the rate it was charged at. Setting the
    price in force again adds nothing.
    """
    unknown = set(optional) - set(OPTIONAL_PRICE_FIELDS)
    if unknown:
        raise ValueError(f"unknown price fields: {', '.join(sorted(unknown))}")
    fields = {
        "input_usd_per_mtok": input_usd,
        "output_usd_per_mtok": output_usd,
        "cached_input_usd_per_mtok": cached_input_usd,
        "request_fee_usd": Decimal(0),
        **{name: None for name in OPTIONAL_PRICE_FIELDS if name != "request_fee_usd"},
        **{name: value for name, value in optional.items() if value is not None},
    }
    for name, value in fields.items():
        if isinstance(value, Decimal):
            price_amount_check(name, value)  # the one check of every entry: commands, apply, API, sync
    when = effective_from or timezone.now()
    try:
        current = (
            Price.objects.filter(model=model, provider=provider)
            .effective_at(when)
            .order_by("-effective_from", "-id")
            .first()
        )
    except ArithmeticError:  # a row stored before amounts were checked, beyond its column: superseded now
        current = None
    if current is not None and all(getattr(current, name) == value for name, value in fields.items()):
        return current, False
    price = Price.objects.create(model=model, provider=provider, effective_from=when, source=source, **fields)
    return price, True


@transaction.atomic
def budget_set(
    *,
    limit_usd: Decimal,
    period: str,
    tenant: Tenant | None = None,
    api_key: ApiKey | None = None,
    soft_limit_percent: int = 80,
) -> Budget:
    """Create or change the budget of this period on a tenant or a key.

    A new budget counts what its owner already spent this period (a "$10 a
    day" budget created at noon includes the morning), so its spend always
    equals the sum of the owner's usage records for the period.
    """
    if (tenant is None) == (api_key is None):
        raise ValueError("a budget belongs to a tenant or to a key")
    if period not in Period.values:
        raise ValueError(f"unknown budget period {period!r}; use one of {', '.join(Period.values)}")
    if limit_usd < 0:
        raise ValueError("a budget cannot be negative")
    usd_to_nanos(limit_usd)
    budget = Budget.objects.filter(tenant=tenant, api_key=api_key, period=period).first()
    if budget is not None:
        budget.limit_usd, budget.soft_limit_percent, budget.is_active = limit_usd, soft_limit_percent, True
        budget.save()
        return budget
    budget = Budget.objects.create(
        tenant=tenant, api_key=api_key, period=period, limit_usd=limit_usd, soft_limit_percent=soft_limit_percent
    )
    start = period_start(period, budget.created_at)
    owner = Q(tenant=tenant) if tenant is not None else Q(api_key=api_key)
    spent = usage_cost_nanos(owner, owner, start, period_end(period, start))
    BudgetSpend.objects.create(budget=budget, period_start=start, spent_nanos=spent)
    return budget


@transaction.atomic
def credit_add(
    *, tenant: Tenant, amount_usd: Decimal, kind: str = CreditEntry.Kind.TOPUP, note: str = ""
) -> CreditEntry:
    """Add a top-up, refund or adjustment to a tenant's prepaid ledger.

    Usage entries are the meter's alone. Every process sees the new
    balance within seconds (the config version moves).
    """
    if kind == CreditEntry.Kind.USAGE:
        raise ValueError("usage entries are written by the usage meter")
    if kind in (CreditEntry.Kind.TOPUP, CreditEntry.Kind.REFUND) and amount_usd <= 0:
        raise ValueError(f"a {kind} must be a positive amount")
    entry = CreditEntry.objects.create(tenant=tenant, kind=kind, amount_nanos=usd_to_nanos(amount_usd), note=note)
    config_version_bump()
    return entry


def credit_balance_nanos(tenant: Tenant) -> int:
    return CreditEntry.objects.filter(tenant=tenant).aggregate(total=Sum("amount_nanos"))["total"] or 0
