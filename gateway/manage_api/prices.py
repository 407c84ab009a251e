"""/api/prices: the prices in force, their history, and setting one.

Setting a price adds a row from its effective date on; rows are never edited,
so past usage keeps the rate it was charged at.
"""

from django.http import HttpRequest
from django.utils import timezone
from ninja import Router, Status
from ninja.pagination import paginate

from billing.models import Price
from billing.services import price_set
from gateway.manage_api.errors import not_found
from gateway.manage_api.schemas import PriceIn, PriceOut, PriceSetOut
from gateway.manage_api.writes import audited_write
from proxy.models import Provider

router = Router(tags=["Prices"])


@router.get("/prices", response=list[PriceOut])
@paginate
def prices_list(request: HttpRequest, model: str | None = None):
    """The price in force now for each model (and provider)."""
    rows = (
        Price.objects.effective_at(timezone.now())
        .select_related("provider")
        .order_by("model", "provider_id", "-effective_from", "-id")
    )
    if model is not None:
        rows = rows.filter(model=model)
    current: dict[tuple[str, int | None], Price] = {}
    for price in rows:
        current.setdefault((price.model, price.provider_id), price)
    return list(current.values())


@router.get("/prices/history", response=list[PriceOut])
@paginate
def prices_history(request: HttpRequest, model: str, provider: str | None = None):
    """Every price of a model, newest first (future ones included)."""
    rows = Price.objects.filter(model=model).select_related("provider").order_by("-effective_from", "-id")
    return rows.filter(provider__name=provider) if provider else rows


@router.post("/prices", response={201: PriceSetOut})
def prices_set(request: HttpRequest, payload: PriceIn) -> Status[dict[str, object]]:
    """Add a price from `effective_from` (default now); setting the price in force again adds nothing."""
    fields = payload.dict(exclude={"model", "provider", "effective_from"}, exclude_none=True)
    with audited_write(request) as write:
        provider = None
        if payload.provider:
            provider = Provider.objects.filter(name=payload.provider).first()
            if provider is None:
                raise not_found("provider named", repr(payload.provider))
        price, changed = price_set(
            model=payload.model,
            provider=provider,
            effective_from=payload.effective_from,
            input_usd=fields.pop("input_usd_per_mtok"),
            output_usd=fields.pop("output_usd_per_mtok"),
            cached_input_usd=fields.pop("cached_input_usd_per_mtok", None),
            **fields,
        )
        if changed:
            write.record("price.set", price, payload.dict(exclude_none=True))
    return Status(201, {"price": price, "changed": changed})
