"""Model name -> route target. Pure: works on a loaded `Catalog`."""

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from proxy.context import PriceSnapshot, ProviderConfig, RouteTarget, TenantContext
from proxy.errors import GatewayError

_WILDCARD_CACHE_MAX = 4096


@dataclass(frozen=True, slots=True)
class Wildcard:
    prefix: str  # the route's name without its trailing "*"
    provider: ProviderConfig
    upstream_prefix: str


@dataclass(frozen=True)
class Catalog:
    """Everything routing needs, loaded at once from the admin's tables."""

    routes: Mapping[str, RouteTarget]
    wildcards: tuple[Wildcard, ...]  # longest prefix first
    prices: Mapping[tuple[str, str], PriceSnapshot]  # (provider name or "", model)
    # time.time() at which a price scheduled for later takes effect
    valid_until: float = float("inf")
    _resolved: dict[str, RouteTarget] = field(default_factory=dict, repr=False, compare=False)

    def is_current(self) -> bool:
        return time.time() < self.valid_until

    def price_for(self, provider: str, *models: str) -> PriceSnapshot | None:
        for model in models:
            price = self.prices.get((provider, model)) or self.prices.get(("", model))
            if price is not None:
                return price
        return None

    def resolve(self, model: str) -> RouteTarget | None:
        target = self.routes.get(model) or self._resolved.get(model)
        if target is not None:
            return target
        for wildcard in self.wildcards:
            rest = model[len(wildcard.prefix) :]
            if model.startswith(wildcard.prefix) and rest:
                upstream = wildcard.upstream_prefix + rest
                target = RouteTarget(
                    public_model=model,
                    provider=wildcard.provider,
                    upstream_model=upstream,
                    price=self.price_for(wildcard.provider.name, upstream, model),
                )
                if len(self._resolved) >= _WILDCARD_CACHE_MAX:
                    self._resolved.clear()
                self._resolved[model] = target
                return target
        return None

    def listed_models(self) -> list[str]:
        """Concrete names for /v1/models (wildcards cannot be enumerated)."""
        return sorted(self.routes)


def route_for(catalog: Catalog, ctx: TenantContext, model: str) -> RouteTarget:
    """The target for `model` as this key may use it, or the client's error."""
    if not ctx.allows(model):
        raise GatewayError(403, "model_not_allowed", f"This API key may not use the model '{model}'.", param="model")
    target = catalog.resolve(model)
    if target is None:
        raise GatewayError(404, "model_not_found", f"The model '{model}' does not exist.", param="model")
    return target
