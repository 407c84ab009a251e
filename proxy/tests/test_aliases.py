"""Aliases, alias patterns and the provider-prefix form: the pure catalog first,
then the loader, the command, the declarative file and the admin."""

import logging
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from gateway.kernel.context import PriceSnapshot, ProviderConfig, Rates, RoutePlan, RouteTarget, TenantContext
from gateway.kernel.errors import GatewayError
from proxy.apply import ApplyError, config_apply
from proxy.catalog_loader import catalog_load
from proxy.models import ModelAlias, Provider
from proxy.routing import AliasPattern, Catalog, Wildcard, may_use, plan_for
from proxy.services import DeploymentSpec, route_set

OPENAI = ProviderConfig(name="openai", kind="openai", base_url="https://api.openai.com/v1")
ANTHROPIC = ProviderConfig(name="anthropic", kind="anthropic", base_url="https://api.anthropic.com/v1")
ROUTER = ProviderConfig(name="openrouter", kind="openrouter", base_url="https://openrouter.ai/api/v1")
CHEAP = PriceSnapshot(Rates(1, 1, 1, 1, 1, 1))
DEAR = PriceSnapshot(Rates(9, 9, 9, 9, 9, 9))
ROUTER_PRICE = PriceSnapshot(Rates(5, 5, 5, 5, 5, 5))


def plan(
    model: str,
    provider: ProviderConfig,
    upstream: str,
    price: PriceSnapshot | None,
    deployment_id: int,
    fallbacks: tuple[str, ...] = (),
) -> RoutePlan:
    target = RouteTarget(model, provider, upstream, price, deployment_id=deployment_id)
    return RoutePlan(public_model=model, deployments=(target,), fallbacks=fallbacks)


def catalog(**changes: Any) -> Catalog:
    fields: dict[str, Any] = {
        "routes": {
            "big": plan("big", OPENAI, "gpt-4o", DEAR, 1, fallbacks=("small",)),
            "small": plan("small", ANTHROPIC, "claude-haiku-4-5", CHEAP, 2),
        },
        "wildcards": (Wildcard("openai/", plan("openai/*", OPENAI, "", None, 3)),),
        "prices": {("openrouter", "anthropic/claude-3.5-haiku"): ROUTER_PRICE, ("", "meta/llama"): CHEAP},
        "aliases": {"large": "big", "ghost": "missing"},
        # Given out of order on purpose: the catalog orders them itself.
        "alias_patterns": (
            AliasPattern("claude-*", "small", priority=10),  # anything else Claude Code asks for
            AliasPattern("claude-*haiku*", "small"),
            AliasPattern("claude-*opus*", "big"),
            AliasPattern("openai/gpt-4o-*", "small"),
        ),
        "prefix_providers": {"openrouter": ROUTER, "openai": OPENAI},
    }
    return Catalog(**{**fields, **changes})


def ctx(allowed: tuple[str, ...] | None = None) -> TenantContext:
    return TenantContext(
        tenant_id=1, tenant_slug="t", tenant_active=True, key_id=1, key_prefix="sk-gw-x", allowed_models=allowed
    )


def served_by(found: RoutePlan) -> list[tuple[str, str, str, int | None]]:
    return [(t.public_model, t.provider.name, t.upstream_model, t.deployment_id) for t in found.deployments]


def refusal(model: str, allowed: tuple[str, ...] | None = None, cat: Catalog | None = None) -> tuple[int, str]:
    with pytest.raises(GatewayError) as error:
        plan_for(cat or catalog(), ctx(allowed), model)
    return error.value.status, error.value.code


def test_an_alias_serves_its_targets_deployments_under_the_name_the_client_asked_for() -> None:
    found = plan_for(catalog(), ctx(), "large")
    assert found.public_model == "large"
    assert served_by(found) == [("large", "openai", "gpt-4o", 1)]
    assert (found.deployments[0].price, found.fallbacks) == (DEAR, ("small",))


def test_an_exact_route_wins_over_an_alias_of_the_same_name() -> None:
    cat = catalog(aliases={"big": "small"}, alias_patterns=(AliasPattern("b*", "small"),))
    assert served_by(plan_for(cat, ctx(), "big")) == [("big", "openai", "gpt-4o", 1)]


def test_an_exact_alias_wins_over_a_pattern() -> None:
    cat = catalog(aliases={"claude-haiku-4-5": "big"})
    assert served_by(plan_for(cat, ctx(), "claude-haiku-4-5")) == [("claude-haiku-4-5", "openai", "gpt-4o", 1)]


def test_a_pattern_wins_over_a_wildcard_route_which_still_serves_the_rest() -> None:
    assert served_by(plan_for(catalog(), ctx(), "openai/gpt-4o-2024-08-06")) == [
        ("openai/gpt-4o-2024-08-06", "anthropic", "claude-haiku-4-5", 2)
    ]
    assert served_by(plan_for(catalog(), ctx(), "openai/o3")) == [("openai/o3", "openai", "o3", 3)]


def test_a_wildcard_route_wins_over_the_provider_prefix_form() -> None:
    # openai is a prefix provider too, but its wildcard route (deployment 3) answers first.
    assert served_by(plan_for(catalog(), ctx(), "openai/gpt-4.1")) == [("openai/gpt-4.1", "openai", "gpt-4.1", 3)]


@pytest.mark.parametrize(
    ("asked", "route"),
    [
        ("claude-opus-4-5-20251101", "big"),
        ("claude-3-opus-20240229", "big"),
        ("claude-haiku-4-5", "small"),
        ("claude-3-5-haiku-20241022", "small"),
        ("claude-sonnet-4-5", "small"),  # only the catch-all matches
    ],
)
def test_claude_code_model_names_map_to_the_big_and_small_routes_by_pattern(asked: str, route: str) -> None:
    found = plan_for(catalog(), ctx(), asked)
    assert (found.public_model, found.deployments[0].deployment_id) == (asked, {"big": 1, "small": 2}[route])


def test_patterns_are_tried_by_priority_then_the_longest_first() -> None:
    cat = catalog(alias_patterns=(AliasPattern("claude-*", "small"), AliasPattern("claude-*opus*", "big")))
    assert cat.lookup("claude-opus-4-5").alias_of == "big"  # same priority: the longer pattern
    cat = catalog(alias_patterns=(AliasPattern("claude-*", "small", -1), AliasPattern("claude-*opus*", "big")))
    assert cat.lookup("claude-opus-4-5").alias_of == "small"  # the better priority, however short
    assert [p.pattern for p in catalog().alias_patterns] == [
        "openai/gpt-4o-*",
        "claude-*haiku*",
        "claude-*opus*",
        "claude-*",
    ]


def test_the_pattern_with_dashes_around_opus_misses_the_newer_claude_names() -> None:
    # Why the README suggests claude-*opus*: the 4.x names start with claude-opus-.
    cat = catalog(alias_patterns=(AliasPattern("claude-*-opus-*", "big"),))
    assert cat.lookup("claude-3-opus-20240229").alias_of == "big"
    assert cat.lookup("claude-opus-4-5-20251101") is None


def test_patterns_match_case_sensitively() -> None:
    assert catalog().lookup("Claude-Opus-4-5") is None


def test_a_resolved_pattern_is_built_once_and_served_from_the_cache() -> None:
    cat = catalog()
    first = cat.lookup("claude-opus-4-5")
    assert first is not None and cat.lookup("claude-opus-4-5") is first


def test_the_provider_prefix_form_sends_the_rest_of_the_name_to_that_provider() -> None:
    found = plan_for(catalog(), ctx(), "openrouter/anthropic/claude-3.5-haiku")
    assert served_by(found) == [
        ("openrouter/anthropic/claude-3.5-haiku", "openrouter", "anthropic/claude-3.5-haiku", None)
    ]
    assert (found.public_model, found.deployments[0].price, found.fallbacks) == (
        "openrouter/anthropic/claude-3.5-haiku",
        ROUTER_PRICE,
        (),
    )
    assert plan_for(catalog(), ctx(), "openrouter/meta/llama").deployments[0].price == CHEAP  # any provider's price


def test_the_provider_prefix_form_is_off_without_prefix_providers() -> None:
    assert refusal("openrouter/anthropic/claude-3.5-haiku", cat=catalog(prefix_providers={})) == (
        404,
        "model_not_found",
    )


@pytest.mark.parametrize("model", ["nobody/gpt-4o", "openrouter/", "openrouter"])
def test_an_unknown_provider_or_an_empty_model_after_the_prefix_is_not_found(model: str) -> None:
    assert refusal(model) == (404, "model_not_found")


def test_an_alias_or_pattern_to_a_missing_route_is_ignored() -> None:
    assert refusal("ghost") == (404, "model_not_found")
    cat = catalog(alias_patterns=(AliasPattern("gh*", "missing", -5), AliasPattern("g*", "big")))
    assert cat.lookup("ghost2").alias_of == "big"  # the dead pattern does not hide the next one


@pytest.mark.parametrize(
    ("allowed", "asked", "outcome"),
    [
        (("cheap-*",), "large", 403),  # the target gpt-4o route is not allowed
        (("l*",), "large", 403),  # a pattern matching the asked name is not enough
        (("claude-*",), "claude-opus-4-5", 403),  # the same for an alias pattern
        (("big",), "large", "big"),  # the target is allowed
        (("b*",), "claude-opus-4-5", "big"),
        (("large",), "large", "big"),  # the asked name listed exactly
        (("claude-opus-4-5",), "claude-opus-4-5", "big"),
        (("openrouter/*",), "openrouter/x", "openrouter"),  # not an alias: the asked name as always
        (("openai/*",), "openrouter/x", 403),
        (("cheap-*",), "nope", 403),  # unknown and not allowed: 403, as before aliases
        (None, "nope", 404),
    ],
)
def test_an_alias_may_be_used_when_its_target_is_allowed_or_the_key_lists_the_asked_name(
    allowed: tuple[str, ...], asked: str, outcome: int | str
) -> None:
    if isinstance(outcome, int):
        assert refusal(asked, allowed)[0] == outcome
        assert not may_use(catalog(), ctx(allowed), asked)
    else:
        assert plan_for(catalog(), ctx(allowed), asked).deployments[0].provider.name == {"big": "openai"}.get(
            outcome, outcome
        )
        assert may_use(catalog(), ctx(allowed), asked)


def test_the_model_list_has_exact_aliases_owned_by_their_targets_owner_but_no_patterns() -> None:
    cat = catalog()
    assert cat.listed_models() == ["big", "large", "small"]  # not ghost (no route), no patterns
    assert (cat.owner("large"), cat.owner("small")) == ("openai", "anthropic")


# The database: loading, the command, the declarative file and the admin.


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue().strip()


def provider(name: str, **fields: Any) -> Provider:
    return Provider.objects.create(name=name, base_url=f"https://{name}.test/v1", **fields)


def routes(*names: str, via: str = "a") -> Provider:
    p = Provider.objects.filter(name=via).first() or provider(via)
    for name in names:
        route_set(model=name, deployments=[DeploymentSpec(p, f"up-{name}")])
    return p


@pytest.mark.django_db
def test_the_loaded_catalog_resolves_aliases_and_logs_the_ones_it_ignores(caplog: pytest.LogCaptureFixture) -> None:
    routes("big", "small")
    ModelAlias.objects.create(pattern="large", target_model="big")
    ModelAlias.objects.create(pattern="claude-*haiku*", target_model="small")
    ModelAlias.objects.create(pattern="ghost", target_model="missing")
    ModelAlias.objects.create(pattern="small", target_model="big")  # bypassing the checks, as a raw write could
    ModelAlias.objects.create(pattern="off", target_model="big", is_active=False)
    with caplog.at_level(logging.WARNING, logger="proxy.catalog"):
        cat = catalog_load()
    assert served_by(cat.resolve("large")) == [("large", "a", "up-big", cat.routes["big"].deployments[0].deployment_id)]
    assert cat.resolve("claude-3-5-haiku-20241022").deployments[0].upstream_model == "up-small"
    assert cat.resolve("small").deployments[0].upstream_model == "up-small"
    assert cat.resolve("ghost") is None and cat.resolve("off") is None
    assert "alias ghost: target 'missing' is not a served route; ignored" in caplog.text
    assert "alias small: a route has the same name and wins; ignored" in caplog.text


@pytest.mark.django_db
def test_the_provider_prefix_form_follows_the_setting_and_reaches_active_providers_only(settings: Any) -> None:
    provider("on"), provider("off", is_active=False)
    found = catalog_load().resolve("on/some-model")
    assert found is not None and served_by(found) == [("on/some-model", "on", "some-model", None)]
    assert catalog_load().resolve("off/some-model") is None
    settings.PROXY_PROVIDER_PREFIX_ROUTING = False
    assert catalog_load().resolve("on/some-model") is None


@pytest.mark.django_db
def test_the_catalog_with_aliases_still_loads_in_a_constant_number_of_queries(
    django_assert_num_queries: Any,
) -> None:
    routes(*(f"m{i}" for i in range(10)))
    for i in range(10):
        ModelAlias.objects.create(pattern=f"alias-{i}", target_model=f"m{i}")
        ModelAlias.objects.create(pattern=f"family-{i}-*", target_model=f"m{i}")
    with django_assert_num_queries(7):  # providers, prices, deployments, aliases, routers, augmentors, guardrails
        cat = catalog_load()
    assert len(cat.aliases) == 10 and len(cat.alias_patterns) == 10


@pytest.mark.django_db
def test_alias_create_creates_updates_and_deletes_and_says_what_it_did() -> None:
    routes("gpt-4o")
    assert run("alias_create", "big", "--to", "gpt-4o") == "saved alias big -> gpt-4o (priority 0)"
    assert run("alias_create", "big", "--to", "gpt-4o") == "unchanged alias big -> gpt-4o (priority 0)"
    assert run("alias_create", "claude-*opus*", "--to", "gpt-4o", "--priority", "2") == (
        "saved pattern claude-*opus* -> gpt-4o (priority 2)"
    )
    assert run("alias_create", "big", "--delete") == "deleted alias big"
    assert run("alias_create", "big", "--delete") == "no alias big"
    assert list(ModelAlias.objects.values_list("pattern", "target_model", "priority")) == [
        ("claude-*opus*", "gpt-4o", 2)
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("huge", "--to", "big"), "'big' is itself an alias; aliases do not chain"),
        (("gpt-4o", "--to", "other"), "a route of that name exists and would always win"),
        (("x", "--to", "gpt-*"), "must be a concrete route name, not a pattern"),
        (("x", "--to", "x"), "cannot point at itself"),
        (("x",), "--to MODEL is required"),
    ],
)
def test_alias_create_refuses_chains_shadowed_names_and_pattern_targets(args: tuple[str, ...], message: str) -> None:
    routes("gpt-4o")
    run("alias_create", "big", "--to", "gpt-4o")
    with pytest.raises(CommandError, match=message):
        run("alias_create", *args)


@pytest.mark.django_db
def test_an_alias_cannot_be_renamed_into_the_target_of_another() -> None:
    routes("gpt-4o")
    ModelAlias.objects.create(pattern="big", target_model="huge")  # a raw write: alias_create wants the route
    with pytest.raises(CommandError, match="the alias 'big' points at 'huge'; aliases do not chain"):
        run("alias_create", "huge", "--to", "gpt-4o")


ALIASES_FILE: dict[str, Any] = {
    "providers": [{"name": "a", "base_url": "https://a.test/v1"}],
    "routes": [{"model": "gpt-4o", "provider": "a"}, {"model": "mini", "provider": "a"}],
    "aliases": [
        {"pattern": "big", "to": "gpt-4o"},
        {"pattern": "claude-*haiku*", "to": "mini", "priority": 1, "note": "Claude Code's small model"},
    ],
}


def aliases() -> list[tuple[str, str, int, str]]:
    return list(ModelAlias.objects.order_by("pattern").values_list("pattern", "target_model", "priority", "note"))


@pytest.mark.django_db
def test_gateway_apply_sets_aliases_and_applying_again_changes_nothing() -> None:
    assert config_apply(ALIASES_FILE) == {"provider saved": 1, "route saved": 2, "alias saved": 2}
    assert config_apply(ALIASES_FILE) == {"provider unchanged": 1, "route unchanged": 2, "alias unchanged": 2}
    assert aliases() == [("big", "gpt-4o", 0, ""), ("claude-*haiku*", "mini", 1, "Claude Code's small model")]
    assert catalog_load().resolve("claude-haiku-4-5").deployments[0].upstream_model == "mini"


@pytest.mark.django_db
def test_gateway_apply_removes_aliases_not_in_the_file_only_when_it_has_an_aliases_key() -> None:
    config_apply(ALIASES_FILE)
    without = {key: value for key, value in ALIASES_FILE.items() if key != "aliases"}
    assert "alias removed" not in config_apply(without) and len(aliases()) == 2
    # A name may move: big becomes the target of another alias in the same file.
    moved = {**without, "aliases": [{"pattern": "huge", "to": "big"}]}
    with pytest.raises(ApplyError, match="'big' is itself an alias"):
        config_apply({**without, "aliases": [{"pattern": "huge", "to": "big"}, ALIASES_FILE["aliases"][0]]})
    routes("big")
    assert config_apply(moved) == {"provider unchanged": 1, "route unchanged": 2, "alias removed": 2, "alias saved": 1}
    assert config_apply({**without, "aliases": []}) == {
        "provider unchanged": 1,
        "route unchanged": 2,
        "alias removed": 1,
    }
    assert aliases() == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"pattern": "big"}, r"aliases\[1\] is missing to"),
        ({"pattern": "big", "to": "gpt-4o", "weight": 2}, "unknown fields weight"),
        ({"pattern": "big", "to": "gpt-4o", "priority": "high"}, "priority must be a whole number"),
        ({"pattern": "gpt-4o", "to": "mini"}, "a route of that name exists"),
    ],
)
def test_gateway_apply_refuses_an_invalid_alias_and_applies_nothing(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ApplyError, match=message):
        config_apply({**ALIASES_FILE, "aliases": [ALIASES_FILE["aliases"][1], entry]})
    assert not Provider.objects.exists() and not ModelAlias.objects.exists()


@pytest.mark.django_db
def test_gateway_apply_refuses_the_same_pattern_twice() -> None:
    with pytest.raises(ApplyError, match="an alias pattern is listed twice"):
        config_apply({**ALIASES_FILE, "aliases": [{"pattern": "big", "to": "gpt-4o"}] * 2})


@pytest.mark.django_db
def test_saving_an_alias_tells_every_process_to_reload() -> None:
    from accounts.models import ConfigVersion

    before = ConfigVersion.objects.get_or_create(pk=1)[0].version
    ModelAlias.objects.create(pattern="big", target_model="gpt-4o")
    assert ConfigVersion.objects.get(pk=1).version == before + 1


@pytest.mark.django_db
def test_the_admin_lists_aliases_with_whether_their_target_route_is_active_and_searches_them(
    admin_client: Any,
) -> None:
    routes("gpt-4o")
    ModelAlias.objects.create(pattern="big", target_model="gpt-4o")
    ModelAlias.objects.create(pattern="claude-*", target_model="missing")
    page = admin_client.get("/admin/proxy/modelalias/").content.decode()
    # Both aliases are active and big's target route is; claude-*'s is missing.
    assert (page.count('alt="True"'), page.count('alt="False"')) == (3, 1)
    assert ">pattern<" in page and ">exact<" in page
    assert ">big<" in page
    found = admin_client.get("/admin/proxy/modelalias/", {"q": "missing"}).content.decode()
    assert "claude-*" in found and ">big<" not in found


@pytest.mark.django_db
def test_the_admin_refuses_an_alias_that_would_chain(admin_client: Any) -> None:
    ModelAlias.objects.create(pattern="big", target_model="gpt-4o")
    data = {"pattern": "huge", "target_model": "big", "priority": "0", "is_active": "on", "note": ""}
    response = admin_client.post("/admin/proxy/modelalias/add/", data)
    assert response.status_code == 200
    assert "&#x27;big&#x27; is itself an alias; aliases do not chain" in response.content.decode()
    assert not ModelAlias.objects.filter(pattern="huge").exists()
