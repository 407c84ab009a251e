"""Model name -> route plan -> one deployment. Pure: works on a loaded `Catalog`.

A name resolves, first match wins: an exact route; an exact alias (`big`);
an alias pattern (`claude-*-opus-*`), by priority then the longest pattern;
a wildcard route (`openai/*`), the longest prefix first; the provider-prefix
form `<provider>/<upstream model>` (when the catalog holds providers for it).

A smart router's name (`Catalog.routers`) is asked before all of these, by
the pipeline's route step (proxy.pipeline.route, proxy.routers): its
designator picks one of its candidates, which then resolves as above.
An augmentor's name (`Catalog.augmentors`) is asked next, before the names
above: its target serves it, once proxy.augment has added what its
designator asked to be looked up.
"""

import fnmatch
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from django.conf import settings

from billing.pricing import PriceRates, rates_from_usd
from gateway.kernel.context import PriceSnapshot, ProviderConfig, RoutePlan, RouteTarget, TenantContext
from gateway.kernel.errors import GatewayError
from proxy.guardrails.index import EMPTY_INDEX, GuardrailIndex

_RESOLVED_CACHE_MAX = 4096
_RNG = random.Random()


@dataclass(frozen=True, slots=True)
class Wildcard:
    prefix: str  # the route's name without its trailing "*"
    # The route's plan; each deployment's upstream_model is the prefix that
    # the rest of the requested name is appended to.
    plan: RoutePlan


@dataclass(frozen=True, slots=True)
class AliasPattern:
    pattern: str  # a shell pattern, matched case-sensitively
    target: str  # a concrete route name
    priority: int = 0  # lower first; then the longer pattern

    def order(self) -> tuple[int, int, str]:
        return (self.priority, -len(self.pattern), self.pattern)


@dataclass(frozen=True, slots=True)
class Candidate:
    name: str  # a model name the catalog resolves
    description: str = ""  # its route's description, for the designator


@dataclass(frozen=True, slots=True)
class SmartRouter:
    """A name whose requests go to the candidate a designator model picks
    (proxy.routers); `fallback` when the designator cannot say."""

    name: str
    designator: str
    candidates: tuple[Candidate, ...]
    fallback: str
    purpose: str = ""


@dataclass(frozen=True, slots=True)
class Augmentor:
    """A name whose requests the designator may have searched or scraped
    for before `target` answers (proxy.augment)."""

    name: str
    designator: str
    target: str
    search_provider: str  # searxng, perplexity (proxy.augment_search)
    max_search_results: int = 5
    max_scrape_urls: int = 3
    max_context_tokens: int = 2000
    purpose: str = ""


@dataclass(frozen=True, slots=True)
class Resolution:
    """A resolved name: its plan and, when it is an alias, the route it names
    (the key's allowed models are checked against that route too)."""

    plan: RoutePlan
    alias_of: str | None = None


@dataclass(frozen=True)
class Catalog:
    """Everything routing needs, loaded at once from the admin's tables."""

    routes: Mapping[str, RoutePlan]
    wildcards: tuple[Wildcard, ...]  # longest prefix first
    prices: Mapping[tuple[str, str], PriceSnapshot]  # (provider name or "", model)
    # time.time() at which a price scheduled for later takes effect
    valid_until: float = float("inf")
    aliases: Mapping[str, str] = field(default_factory=dict)  # exact alias -> route name
    alias_patterns: tuple[AliasPattern, ...] = ()  # kept in AliasPattern.order
    # Providers that `<provider>/<model>` reaches directly; empty: that form is off.
    prefix_providers: Mapping[str, ProviderConfig] = field(default_factory=dict)
    routers: Mapping[str, SmartRouter] = field(default_factory=dict)  # by the name clients ask for
    augmentors: Mapping[str, Augmentor] = field(default_factory=dict)  # likewise
    guardrails: GuardrailIndex = EMPTY_INDEX  # by tenant and key (proxy.guardrails)
    # Names resolved past the exact routes (aliases, wildcards, provider
    # prefixes): each is built once, then served from here.
    _resolved: dict[str, Resolution] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "alias_patterns", tuple(sorted(self.alias_patterns, key=AliasPattern.order)))

    def is_current(self) -> bool:
        return time.time() < self.valid_until

    def price_for(self, provider: str, *models: str) -> PriceSnapshot | None:
        """The price of the first of `models` that has one, as named or as
        LiteLLM's price file names it (price_names): a name variant must never
        run unpriced past a budget. With BILLING_UNPRICED_POLICY=default, an
        unpriced model gets the default rates."""
        for names in (models, [v for model in models for v in price_names(model)]):
            for model in names:
                price = self.prices.get((provider, model)) or self.prices.get(("", model))
                if price is not None:
                    return price
        return unpriced_default()

    def resolve(self, model: str) -> RoutePlan | None:
        found = self.lookup(model)
        return None if found is None else found.plan

    def lookup(self, model: str) -> Resolution | None:
        """How `model` resolves (see the module docstring), or None."""
        plan = self.routes.get(model)
        if plan is not None:
            return Resolution(plan)
        found = self._resolved.get(model)
        if found is None:
            found = self._find(model)
            if found is None:  # misses are not kept: random names must not flush the cache
                return None
            if len(self._resolved) >= _RESOLVED_CACHE_MAX:
                self._resolved.clear()
            self._resolved[model] = found
        return found

    def _find(self, model: str) -> Resolution | None:
        target = self._alias_target(model)
        if target is not None:
            return Resolution(self._renamed(self.routes[target], model), alias_of=target)
        for wildcard in self.wildcards:
            rest = model[len(wildcard.prefix) :]
            if model.startswith(wildcard.prefix) and rest:
                return Resolution(self._expand(wildcard.plan, model, rest))
        return self._provider_prefixed(model)

    def _alias_target(self, model: str) -> str | None:
        # The loader drops aliases to routes it does not serve; a catalog
        # built by hand may still hold some, so they are skipped here too.
        target = self.aliases.get(model)
        if target in self.routes:
            return target
        for alias in self.alias_patterns:
            if alias.target in self.routes and fnmatch.fnmatchcase(model, alias.pattern):
                return alias.target
        return None

    @staticmethod
    def _renamed(plan: RoutePlan, model: str) -> RoutePlan:
        """The target's deployments and fallbacks under the name the client used."""
        deployments = tuple(replace(target, public_model=model) for target in plan.deployments)
        fallbacks = tuple(name for name in plan.fallbacks if name != model)
        return RoutePlan(public_model=model, deployments=deployments, fallbacks=fallbacks)

    def _expand(self, plan: RoutePlan, model: str, rest: str) -> RoutePlan:
        deployments = []
        for target in plan.deployments:
            upstream = target.upstream_model + rest
            price = self.price_for(target.provider.name, upstream, model)
            deployments.append(replace(target, public_model=model, upstream_model=upstream, price=price))
        # A wildcard may fall back to another name it matches itself, never to this one.
        fallbacks = tuple(name for name in plan.fallbacks if name != model)
        return RoutePlan(public_model=model, deployments=tuple(deployments), fallbacks=fallbacks)

    def _provider_prefixed(self, model: str) -> Resolution | None:
        """`openrouter/anthropic/claude-3.5-haiku`: the provider `openrouter`,
        asked for `anthropic/claude-3.5-haiku` (priced as a wildcard is)."""
        name, _, rest = model.partition("/")
        provider = self.prefix_providers.get(name) if rest else None
        if provider is None:
            return None
        target = RouteTarget(
            public_model=model, provider=provider, upstream_model=rest, price=self.price_for(name, rest, model)
        )
        return Resolution(RoutePlan(public_model=model, deployments=(target,)))

    def listed_models(self) -> list[str]:
        """Concrete names for /v1/models: routes, exact aliases, smart
        routers and augmentors (wildcards and patterns cannot be enumerated)."""
        served_aliases = (name for name, target in self.aliases.items() if target in self.routes)
        return sorted({*self.routes, *served_aliases, *self.routers, *self.augmentors})

    def owner(self, model: str) -> str:
        """The provider named as a listed model's owner: its (target's) first
        deployment's; `gateway` for a smart router or an augmentor."""
        if model in self.routers or model in self.augmentors:
            return "gateway"
        plan = self.routes.get(model) or self.routes[self.aliases[model]]
        return plan.deployments[0].provider.name


def _allowed(ctx: TenantContext, model: str, alias_of: str | None) -> bool:
    if alias_of is None:
        return ctx.allows(model)
    return ctx.allows(alias_of) or model in (ctx.allowed_models or ())


def may_use(catalog: Catalog, ctx: TenantContext, model: str) -> bool:
    """Whether this key may call `model` and it resolves (for model lists)."""
    router = catalog.routers.get(model)
    if router is not None:  # and some candidate it may be sent to
        return ctx.allows(model) and any(may_use(catalog, ctx, c.name) for c in router.candidates)
    augmentor = catalog.augmentors.get(model)
    if augmentor is not None:  # its target is reached on its behalf, as an alias's is
        return ctx.allows(model) and catalog.lookup(augmentor.target) is not None
    found = catalog.lookup(model)
    return found is not None and _allowed(ctx, model, found.alias_of)


def plan_for(catalog: Catalog, ctx: TenantContext, model: str) -> RoutePlan:
    """The plan for `model` as this key may use it, or the client's error.

    The key's allowed models are checked against the name as asked, except
    for an alias: then the alias's target route must be allowed, or the key
    must list the asked name itself (exactly, not through a pattern). So a
    key limited to `cheap-*` cannot reach `gpt-4o` through an alias `big`,
    and a key allowed `claude-*` is not let through to whatever a
    `claude-*-opus-*` pattern maps to; listing `big` on a key grants it.
    A name that does not resolve is 403 for a key that may not use it
    anyway, else 404.
    """
    found = catalog.lookup(model)
    if found is None:
        if not ctx.allows(model):
            raise _not_allowed(model)
        raise GatewayError(404, "model_not_found", f"The model '{model}' does not exist.", param="model")
    if not _allowed(ctx, model, found.alias_of):
        raise _not_allowed(model)
    return found.plan


def augmented_plan(catalog: Catalog, ctx: TenantContext, augmentor: Augmentor) -> RoutePlan:
    """The plan that serves an augmentor: its target's. A key needs the
    augmentor's name; its target is reached on the augmentor's behalf, as an
    alias's target is when the key lists the alias."""
    if not ctx.allows(augmentor.name):
        raise _not_allowed(augmentor.name)
    plan = catalog.resolve(augmentor.target)
    if plan is None:  # the loader leaves such an augmentor out; a catalog built otherwise may not
        raise GatewayError(404, "model_not_found", f"The model '{augmentor.name}' does not exist.", param="model")
    return plan


def _not_allowed(model: str) -> GatewayError:
    return GatewayError(403, "model_not_allowed", f"This API key may not use the model '{model}'.", param="model")


def choose(
    plan: RoutePlan,
    *,
    healthy: Callable[[RouteTarget], bool],
    exclude: set[int],
    rng: random.Random | None = None,
) -> RouteTarget | None:
    """A deployment at random in proportion to the weights, among the healthy
    ones not in `exclude` (deployment ids) of the best priority left; None
    when none is left. Targets without a deployment id cannot be excluded."""
    candidates = [t for t in plan.deployments if t.deployment_id not in exclude and healthy(t)]
    if not candidates:
        return None
    best = min(t.priority for t in candidates)
    tier = [t for t in candidates if t.priority == best]
    total = sum(max(t.weight, 0) for t in tier)
    if total <= 0:  # weights of 0 only (not possible from the admin): no preference
        return tier[int((rng or _RNG).random() * len(tier))]
    point = (rng or _RNG).random() * total
    for target in tier:
        point -= max(target.weight, 0)
        if point < 0:
            return target
    return next(t for t in reversed(tier) if t.weight > 0)  # float rounding at the top of the range


_DATED = re.compile(r"(-\d{4}-\d{2}-\d{2}|-\d{8}|-\d{4}|@\d{8}|-latest)$")


def price_names(model: str) -> list[str]:
    """The names a model's price may be filed under, best first: lower case,
    without a provider prefix (`openai/gpt-4o`), without a dated snapshot
    (`gpt-4o-2024-08-06`, `gpt-4-0613`, `claude-3-5-sonnet-20241022`)."""
    names: list[str] = []
    for name in (model, model.lower()):
        bare = name.rsplit("/", 1)[-1]
        for candidate in (name, bare, _DATED.sub("", name), _DATED.sub("", bare)):
            if candidate and candidate != model and candidate not in names:
                names.append(candidate)
    return names


def unpriced_default() -> PriceSnapshot | None:
    """BILLING_UNPRICED_POLICY=default: these rates for a model without a price."""
    if settings.BILLING_UNPRICED_POLICY != "default":
        return None
    usd = PriceRates(
        input=settings.BILLING_UNPRICED_DEFAULT_INPUT_USD,
        output=settings.BILLING_UNPRICED_DEFAULT_OUTPUT_USD,
        cached_input=None,
        cache_write_5m=None,
        cache_write_1h=None,
        reasoning=None,
    )
    return PriceSnapshot(base=rates_from_usd(usd))
