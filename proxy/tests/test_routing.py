"""Model name -> route target (pure)."""

import pytest

from proxy.context import PriceSnapshot, ProviderConfig, Rates, RouteTarget, TenantContext
from proxy.errors import GatewayError
from proxy.routing import Catalog, Wildcard, route_for

OPENAI = ProviderConfig(name="openai", kind="openai", base_url="https://api.openai.com/v1", api_key="sk-secret")
OTHER = ProviderConfig(name="other", kind="openai", base_url="http://127.0.0.1:1/v1")
CHEAP = PriceSnapshot(Rates(1, 1, 1, 1, 1, 1))
DEAR = PriceSnapshot(Rates(9, 9, 9, 9, 9, 9))


def catalog() -> Catalog:
    exact = RouteTarget(public_model="fast", provider=OPENAI, upstream_model="gpt-4o-mini", price=CHEAP)
    return Catalog(
        routes={"fast": exact},
        wildcards=(
            Wildcard(prefix="openai/special-", provider=OTHER, upstream_prefix="sp-"),
            Wildcard(prefix="openai/", provider=OPENAI, upstream_prefix=""),
        ),
        prices={("", "gpt-4o"): CHEAP, ("openai", "gpt-4o"): DEAR},
    )


def ctx(allowed: tuple[str, ...] | None = None) -> TenantContext:
    return TenantContext(tenant_id=1, tenant_slug="t", tenant_active=True, key_id=1, key_prefix="sk-gw-x",
                         allowed_models=allowed)  # fmt: skip


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
