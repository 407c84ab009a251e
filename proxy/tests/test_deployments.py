"""Several deployments per route: commands, the declarative file, the catalog, the admin."""

import http.server
import logging
import threading
from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from proxy.apply import ApplyError, config_apply
from proxy.catalog_loader import catalog_load
from proxy.models import Deployment, Provider, Route
from proxy.services import DeploymentSpec, provider_upsert, route_set, route_upsert
from proxy.tests.live import free_port

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def provider(name: str, **fields: Any) -> Provider:
    return Provider.objects.create(name=name, base_url=f"https://{name}.test/v1", **fields)


def deployments(model: str) -> list[tuple[str, str, int, int, bool]]:
    return [
        (d.provider.name, d.upstream_model, d.weight, d.priority, d.is_active)
        for d in Deployment.objects.filter(route__model=model).order_by("id")
    ]


def test_route_create_again_with_another_provider_adds_a_deployment_and_with_the_same_updates_it() -> None:
    provider("a"), provider("b")
    assert "saved route smart -> a (1 deployments)" in run("route_create", "smart", "--provider", "a")
    assert "(2 deployments)" in run(
        "route_create", "smart", "--provider", "b", "--upstream-model", "big", "--weight", "3", "--priority", "1"
    )
    assert "unchanged route smart -> b" in run(
        "route_create", "smart", "--provider", "b", "--upstream-model", "big", "--weight", "3", "--priority", "1"
    )
    run("route_create", "smart", "--provider", "a", "--weight", "5")
    assert deployments("smart") == [("a", "", 5, 0, True), ("b", "big", 3, 1, True)]


def test_route_create_sets_fallbacks_in_order_and_keeps_them_when_not_given() -> None:
    provider("a")
    run("route_create", "smart", "--provider", "a", "--fallback", "cheap", "--fallback", "cheaper")
    run("route_create", "smart", "--provider", "a", "--weight", "2")
    assert Route.objects.get(model="smart").fallbacks == ["cheap", "cheaper"]
    with pytest.raises(CommandError, match="cannot fall back to itself"):
        run("route_create", "smart", "--provider", "a", "--fallback", "smart")


def test_route_upsert_keeps_its_old_call_shape() -> None:
    a = provider("a")
    route, changed = route_upsert(model="m", provider=a, upstream_model="up")
    assert changed and deployments("m") == [("a", "up", 1, 0, True)]
    assert route_upsert(model="m", provider=a, upstream_model="up") == (route, False)


def test_provider_create_sets_timeouts_and_keeps_the_ones_not_given() -> None:
    run("provider_create", "p", "--base-url", "https://p.test/v1", "--connect-timeout", "2.5", "--idle-timeout", "30")
    run("provider_create", "p", "--base-url", "https://p.test/v1", "--first-byte-timeout", "20")
    p = Provider.objects.get(name="p")
    assert (p.connect_timeout, p.first_byte_timeout, p.idle_timeout) == (2.5, 20.0, 30.0)
    with pytest.raises(CommandError, match="connect_timeout must be a number of seconds above 0"):
        run("provider_create", "p", "--base-url", "https://p.test/v1", "--connect-timeout", "0")


def test_the_catalog_resolves_each_providers_timeouts_against_the_settings(settings: Any) -> None:
    settings.PROXY_CONNECT_TIMEOUT, settings.PROXY_FIRST_BYTE_TIMEOUT, settings.PROXY_IDLE_TIMEOUT = 7.0, 70.0, 77.0
    route_upsert(model="m", provider=provider("slow", first_byte_timeout=600.0))
    config = catalog_load().resolve("m").deployments[0].provider
    assert (config.connect_timeout, config.first_byte_timeout, config.idle_timeout) == (7.0, 600.0, 77.0)


DEPLOYMENTS_FILE = {
    "providers": [
        {"name": "a", "base_url": "https://a.test/v1", "connect_timeout": 3},
        {"name": "b", "base_url": "https://b.test/v1"},
    ],
    "routes": [
        {
            "model": "smart",
            "fallbacks": ["plain"],
            "deployments": [
                {"provider": "a", "upstream_model": "big", "weight": 3},
                {"provider": "b", "upstream_model": "big-eu", "priority": 1},
            ],
        },
        {"model": "plain", "provider": "b", "upstream_model": "small"},
    ],
}


def test_gateway_apply_round_trip_with_deployments_and_fallbacks() -> None:
    assert config_apply(DEPLOYMENTS_FILE) == {"provider saved": 2, "route saved": 2}
    assert config_apply(DEPLOYMENTS_FILE) == {"provider unchanged": 2, "route unchanged": 2}
    assert deployments("smart") == [("a", "big", 3, 0, True), ("b", "big-eu", 1, 1, True)]
    assert Route.objects.get(model="smart").fallbacks == ["plain"]
    assert Provider.objects.get(name="a").connect_timeout == 3.0
    plan = catalog_load().resolve("smart")
    assert [(t.provider.name, t.upstream_model, t.weight, t.priority) for t in plan.deployments] == [
        ("a", "big", 3, 0),
        ("b", "big-eu", 1, 1),
    ]
    assert plan.fallbacks == ("plain",)


def test_gateway_apply_removes_deployments_no_longer_in_the_file() -> None:
    config_apply(DEPLOYMENTS_FILE)
    fewer = {**DEPLOYMENTS_FILE, "routes": [{"model": "smart", "provider": "a", "upstream_model": "big"}]}
    assert config_apply(fewer)["route saved"] == 1
    assert deployments("smart") == [("a", "big", 1, 0, True)]
    assert Route.objects.get(model="smart").fallbacks == []


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ({"model": "m", "provider": "a", "deployments": [{"provider": "a"}]}, "set provider .* or deployments"),
        ({"model": "m"}, "the provider is missing; add provider: NAME"),
        ({"model": "m", "deployments": []}, "deployments must be a non-empty list"),
        ({"model": "m", "deployments": [{"provider": "a", "weight": "x"}]}, "weight must be a whole number"),
        ({"model": "m", "deployments": [{"provider": "a", "weight": 0}]}, "weight must be at least 1"),
        ({"model": "m", "deployments": [{"provider": "a"}, {"provider": "a"}]}, "listed twice"),
        ({"model": "m", "deployments": [{"provider": "a", "region": "eu"}]}, "unknown fields region"),
        ({"model": "m", "provider": "a", "fallbacks": ["m"]}, "cannot fall back to itself"),
        ({"model": "m", "provider": "a", "fallbacks": "other"}, "fallbacks must be a list"),
    ],
)
def test_gateway_apply_refuses_an_invalid_route_and_applies_nothing(route: dict[str, Any], message: str) -> None:
    doc = {"providers": [{"name": "a", "base_url": "https://a.test/v1"}], "routes": [route]}
    with pytest.raises(ApplyError, match=message):
        config_apply(doc)
    assert not Provider.objects.filter(name="a").exists()


def test_the_catalog_loads_in_a_constant_number_of_queries(django_assert_max_num_queries: Any) -> None:
    providers = [provider(f"p{i}") for i in range(5)]
    for i in range(20):
        route_set(model=f"m{i}", deployments=[DeploymentSpec(p, f"up{i}", weight=i + 1) for p in providers])
    route_set(model="w/*", deployments=[DeploymentSpec(providers[0], "x-")])
    with django_assert_max_num_queries(7):  # providers, prices, deployments, aliases, routers, augmentors, guardrails
        catalog = catalog_load()
    assert len(catalog.routes) == 20 and len(catalog.resolve("m7").deployments) == 5
    assert catalog.resolve("w/abc").deployments[0].upstream_model == "x-abc"


def test_inactive_deployments_and_deployments_of_inactive_providers_are_not_served() -> None:
    on, off = provider("on"), provider("off", is_active=False)
    route_set(model="m", deployments=[DeploymentSpec(on), DeploymentSpec(off), DeploymentSpec(on, "other")])
    Deployment.objects.filter(upstream_model="other").update(is_active=False)
    targets = catalog_load().resolve("m").deployments
    assert [(t.provider.name, t.upstream_model) for t in targets] == [("on", "m")]
    assert targets[0].deployment_id == Deployment.objects.get(provider=on, upstream_model="").pk


def test_fallbacks_are_flattened_depth_first_and_cycles_and_unknown_names_are_dropped_with_a_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    p = provider("p")
    for model, fallbacks in [("a", ["b", "c"]), ("b", ["d", "a"]), ("c", ["ghost", "b"]), ("d", []), ("w/*", ["a"])]:
        route_set(model=model, deployments=[DeploymentSpec(p)], fallbacks=fallbacks)
    route_set(model="x", deployments=[DeploymentSpec(p)], fallbacks=["w/anything"])
    with caplog.at_level(logging.WARNING, logger="proxy.catalog"):
        catalog = catalog_load()
    assert catalog.resolve("a").fallbacks == ("b", "d", "c")
    assert catalog.resolve("c").fallbacks == ("b", "d", "a")
    assert catalog.resolve("x").fallbacks == ("w/anything", "a", "b", "d", "c")
    assert "route a: fallback cycle a -> b -> a ignored" in caplog.text
    assert "route a: fallback 'ghost' is not a served model; ignored" in caplog.text


class _ModelsHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        ok = self.path == "/ok/v1/models" and self.headers.get("Authorization") == "Bearer sk-test-secret"
        self.send_response(200 if ok else 404 if self.path == "/none/v1/models" else 401)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def models_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ModelsHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_admins_test_connection_reports_status_and_latency_but_never_the_credential(
    admin_client: Any, models_server: str
) -> None:
    names = {
        "ok": f"{models_server}/ok/v1",
        "none": f"{models_server}/none/v1",
        "denied": f"{models_server}/no/v1",
        "down": f"http://127.0.0.1:{free_port()}/v1",
    }
    pks = [
        provider_upsert(name=n, kind="openai", base_url=url, api_key="sk-test-secret")[0].pk for n, url in names.items()
    ]
    response = admin_client.post(
        "/admin/proxy/provider/", {"action": "test_connection", "_selected_action": pks}, follow=True
    )
    found = sorted(str(m) for m in response.context["messages"])
    assert [m.split(" in ")[0] for m in found] == [
        "denied: HTTP 401",
        "down: no answer",
        "none: HTTP 404",
        "ok: HTTP 200",
    ]
    assert found[0].endswith("ms: the credential was refused") and found[3].endswith("ms: reachable")
    assert found[2].endswith("ms: reachable")  # a provider without /models is still reachable
    assert "sk-test-secret" not in response.content.decode()


def test_the_admin_shows_a_routes_deployments_with_their_breaker_state(admin_client: Any) -> None:
    route_set(model="m", deployments=[DeploymentSpec(provider("a"), weight=2), DeploymentSpec(provider("b"))])
    page = admin_client.get("/admin/proxy/route/").content.decode()
    assert "a ×2 p0, b ×1 p0" in page
    edit = admin_client.get(f"/admin/proxy/route/{Route.objects.get(model='m').pk}/change/").content.decode()
    assert edit.count(">closed<") == 2


def test_a_route_saved_in_the_admin_keeps_its_fallbacks_as_a_list(admin_client: Any) -> None:
    a = provider("a")
    data = {
        "model": "m",
        "fallbacks": "x, y",
        "is_active": "on",
        "deployments-TOTAL_FORMS": "1",
        "deployments-INITIAL_FORMS": "0",
        "deployments-MIN_NUM_FORMS": "1",
        "deployments-MAX_NUM_FORMS": "1000",
        "deployments-0-provider": str(a.pk),
        "deployments-0-upstream_model": "",
        "deployments-0-weight": "1",
        "deployments-0-priority": "0",
        "deployments-0-is_active": "on",
    }
    response = admin_client.post("/admin/proxy/route/add/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Route.objects.get(model="m").fallbacks == ["x", "y"] and deployments("m") == [("a", "", 1, 0, True)]


def test_migrations_leave_no_model_change_unwritten() -> None:
    out = StringIO()
    call_command("makemigrations", "proxy", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


def test_a_deployment_changed_in_its_own_admin_tells_every_process_to_reload(admin_client: Any) -> None:
    from accounts.models import ConfigVersion

    route_set(model="m", deployments=[DeploymentSpec(provider("a"))])
    deployment = Deployment.objects.get()
    before = ConfigVersion.objects.get_or_create(pk=1)[0].version
    data = {
        "route": deployment.route_id,
        "provider": deployment.provider_id,
        "upstream_model": "",
        "weight": "4",
        "priority": "0",
        "is_active": "on",
    }
    assert admin_client.post(f"/admin/proxy/deployment/{deployment.pk}/change/", data).status_code == 302
    assert (Deployment.objects.get().weight, ConfigVersion.objects.get(pk=1).version) == (4, before + 1)
