"""Model name -> route plan -> deployment (pure)."""

import random
from collections import Counter

import pytest

from gateway.kernel.context import PriceSnapshot, ProviderConfig, Rates, RoutePlan, RouteTarget, TenantContext
from gateway.kernel.errors import GatewayError
from proxy.routing import Catalog, Wildcard, choose, plan_for

OPENAI = ProviderConfig(name="openai", kind="openai", base_url="https://api.openai.com/v1", api_key="sk-secret")
OTHER = ProviderConfig(name="other", kind="openai", base_url="http://127.0.0.1:1/v1")
CHEAP = PriceSnapshot(Rates(1, 1, 1, 1, 1, 1))
DEAR = PriceSnapshot(Rates(9, 9, 9, 9, 9, 9))


def route_for(catalog: Catalog, ctx: TenantContext, model: str) -> RouteTarget | None:
    """One deployment for `model`, health aside."""
    return choose(plan_for(catalog, ctx, model), healthy=lambda t: True, exclude=set())


def wildcard(prefix: str, provider: ProviderConfig, upstream_prefix: str, deployment_id: int) -> Wildcard:
    target = RouteTarget(
        public_model=prefix + "*",
        provider=provider,
        upstream_model=upstream_prefix,
        price=None,
        deployment_id=deployment_id,
    )
    return Wildcard(prefix=prefix, plan=RoutePlan(public_model=prefix + "*", deployments=(target,)))


def catalog() -> Catalog:
    exact = RouteTarget(public_model="fast", provider=OPENAI, upstream_model="gpt-4o-mini", price=CHEAP)
    return Catalog(
        routes={"fast": RoutePlan(public_model="fast", deployments=(exact,))},
        wildcards=(wildcard("openai/special-", OTHER, "sp-", 2), wildcard("openai/", OPENAI, "", 3)),
        prices={("", "gpt-4o"): CHEAP, ("openai", "gpt-4o"): DEAR},
    )


def ctx(allowed: tuple[str, ...] | None = None) -> TenantContext:
    return TenantContext(
        tenant_id=1, tenant_slug="t", tenant_active=True, key_id=1, key_prefix="sk-gw-x", allowed_models=allowed
    )


def test_an_exact_route_wins() -> None:
    assert route_for(catalog(), ctx(), "fast").upstream_model == "gpt-4o-mini"


def test_a_wildcard_passes_the_rest_of_the_name_and_prefers_the_provider_specific_price() -> None:
    target = route_for(catalog(), ctx(), "openai/gpt-4o")
    assert (target.provider.name, target.upstream_model, target.price) == ("openai", "gpt-4o", DEAR)


def test_the_longest_wildcard_prefix_wins() -> None:
    target = route_for(catalog(), ctx(), "openai/special-model")
    assert (target.provider.name, target.upstream_model) == ("other", "sp-model")


def test_a_wildcard_needs_something_after_its_prefix() -> None:
    with pytest.raises(GatewayError) as error:
        route_for(catalog(), ctx(), "openai/")
    assert (error.value.status, error.value.code) == (404, "model_not_found")


def test_a_model_outside_the_keys_list_is_forbidden_even_if_it_exists() -> None:
    with pytest.raises(GatewayError) as error:
        route_for(catalog(), ctx(("openai/*",)), "fast")
    assert (error.value.status, error.value.code, error.value.param) == (403, "model_not_allowed", "model")
    assert route_for(catalog(), ctx(("openai/*",)), "openai/gpt-4o").upstream_model == "gpt-4o"


def test_the_provider_credential_never_appears_in_a_repr() -> None:
    assert "sk-secret" not in repr(route_for(catalog(), ctx(), "fast"))


def test_a_catalog_expires_when_a_scheduled_price_takes_effect() -> None:
    assert Catalog(routes={}, wildcards=(), prices={}).is_current()
    assert not Catalog(routes={}, wildcards=(), prices={}, valid_until=0).is_current()


def deployment(
    deployment_id: int, weight: int = 1, priority: int = 0, provider: ProviderConfig = OPENAI
) -> RouteTarget:
    return RouteTarget(
        public_model="m",
        provider=provider,
        upstream_model=f"up-{deployment_id}",
        price=None,
        deployment_id=deployment_id,
        weight=weight,
        priority=priority,
    )


def picks(plan: RoutePlan, n: int, **options: object) -> Counter[int | None]:
    rng = random.Random(42)
    options.setdefault("healthy", lambda t: True)
    options.setdefault("exclude", set())
    counts: Counter[int | None] = Counter()
    for _ in range(n):
        target = choose(plan, rng=rng, **options)
        counts[target.deployment_id if target else None] += 1
    return counts


def test_deployments_are_chosen_in_proportion_to_their_weights() -> None:
    plan = RoutePlan("m", (deployment(1, weight=1), deployment(2, weight=3), deployment(3, weight=6)))
    assert picks(plan, 10_000) == {1: 986, 2: 3008, 3: 6006}


def test_a_lower_priority_number_is_preferred_while_any_of_it_is_left() -> None:
    plan = RoutePlan("m", (deployment(1, priority=1), deployment(2, priority=0, weight=2), deployment(3, priority=0)))
    assert set(picks(plan, 200)) == {2, 3}
    assert picks(plan, 100, healthy=lambda t: t.deployment_id != 2) == {3: 100}


def test_the_next_priority_serves_only_when_the_best_is_unhealthy_or_excluded() -> None:
    plan = RoutePlan("m", (deployment(1, priority=0), deployment(2, priority=1), deployment(3, priority=2)))
    assert picks(plan, 10, healthy=lambda t: t.deployment_id != 1) == {2: 10}
    assert picks(plan, 10, exclude={1, 2}) == {3: 10}


def test_nothing_is_chosen_when_every_deployment_is_excluded_or_unhealthy() -> None:
    plan = RoutePlan("m", (deployment(1), deployment(2)))
    assert choose(plan, healthy=lambda t: t.deployment_id != 2, exclude={1}) is None


def test_excluded_deployments_are_never_chosen_and_the_rest_keep_their_proportions() -> None:
    plan = RoutePlan("m", (deployment(1, weight=5), deployment(2, weight=1), deployment(3, weight=3)))
    assert picks(plan, 4_000, exclude={1}) == {2: 974, 3: 3026}


def test_plan_for_gives_every_deployment_and_the_fallbacks() -> None:
    plan = RoutePlan("m", (deployment(1), deployment(2, provider=OTHER)), fallbacks=("backup",))
    found = plan_for(Catalog(routes={"m": plan}, wildcards=(), prices={}), ctx(), "m")
    assert found is plan


def test_plan_for_refuses_like_route_for() -> None:
    with pytest.raises(GatewayError) as missing:
        plan_for(catalog(), ctx(), "nope")
    with pytest.raises(GatewayError) as forbidden:
        plan_for(catalog(), ctx(("openai/*",)), "fast")
    assert (missing.value.status, missing.value.code) == (404, "model_not_found")
    assert (forbidden.value.status, forbidden.value.code) == (403, "model_not_allowed")


def test_a_wildcard_plan_completes_each_deployments_upstream_prefix_and_prices_each() -> None:
    targets = (
        RouteTarget("openai/*", OPENAI, "", None, deployment_id=1, weight=2),
        RouteTarget("openai/*", OTHER, "eu-", None, deployment_id=2, priority=1),
    )
    plan = RoutePlan("openai/*", targets, fallbacks=("openai/gpt-4o-mini", "backup"))
    cat = Catalog(
        routes={}, wildcards=(Wildcard("openai/", plan),), prices={("openai", "gpt-4o"): DEAR, ("", "eu-gpt-4o"): CHEAP}
    )
    resolved = cat.resolve("openai/gpt-4o")
    assert resolved is not None and resolved is cat.resolve("openai/gpt-4o")  # cached
    assert [
        (t.public_model, t.provider.name, t.upstream_model, t.price, t.deployment_id, t.weight, t.priority)
        for t in resolved.deployments
    ] == [
        ("openai/gpt-4o", "openai", "gpt-4o", DEAR, 1, 2, 0),
        ("openai/gpt-4o", "other", "eu-gpt-4o", CHEAP, 2, 1, 1),
    ]
    assert resolved.fallbacks == ("openai/gpt-4o-mini", "backup")
    assert cat.resolve("openai/gpt-4o-mini").fallbacks == ("backup",)  # never itself


def test_a_listed_models_owner_is_its_first_deployments_provider() -> None:
    plan = RoutePlan("m", (deployment(1, provider=OTHER), deployment(2)))
    cat = Catalog(routes={"m": plan}, wildcards=(), prices={})
    assert (cat.listed_models(), cat.owner("m")) == (["m"], "other")
