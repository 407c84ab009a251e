"""Providers, routes and prices: commands, the declarative file, the catalog."""

import datetime as dt
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from billing.models import Price
from billing.services import price_set
from proxy.catalog_loader import catalog_load
from proxy.models import Deployment, Provider, Route
from proxy.secrets import secret_decrypt

pytestmark = pytest.mark.django_db

CONFIG = """
providers:
  - name: acme
    base_url: https://llm.acme.test/v1/
    api_key_env: ACME_KEY
  - name: vault
    base_url: https://vault.test/v1
    api_key: sk-vault-secret
routes:
  - model: acme-large
    provider: acme
    upstream_model: large-2
  - model: "acme/*"
    provider: acme
prices:
  - model: large-2
    input: 0.5
    cached_input: "0.25"
    output: 1.5
"""


def route(model: str, provider: Provider, upstream_model: str = "", **options: object) -> Route:
    created = Route.objects.create(model=model, **options)
    Deployment.objects.create(route=created, provider=provider, upstream_model=upstream_model)
    return created


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return path


def test_provider_create_stores_the_credential_encrypted_and_never_in_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "saved" in run("provider_create", "p1", "--base-url", "https://x.test/v1", "--api-key", "sk-plain-123")
    provider = Provider.objects.get(name="p1")
    assert "sk-plain-123" not in provider.api_key_encrypted
    assert secret_decrypt(provider.api_key_encrypted) == "sk-plain-123"
    run("provider_create", "p1", "--base-url", "https://x.test/v1", "--api-key-env", "P1_KEY")
    provider.refresh_from_db()
    monkeypatch.setenv("P1_KEY", "from-env")
    assert (provider.api_key_encrypted, provider.resolve_api_key()) == ("", "from-env")


def test_route_create_needs_an_existing_provider() -> None:
    with pytest.raises(CommandError, match="no provider 'ghost'"):
        run("route_create", "m", "--provider", "ghost")


def test_gateway_apply_creates_everything_and_a_second_run_changes_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, CONFIG)
    assert "2 provider saved, 2 route saved, 1 price set" in run("gateway_apply", str(path))
    assert Route.objects.get(model="acme-large").deployments.get().upstream_model == "large-2"
    assert Provider.objects.get(name="acme").base_url == "https://llm.acme.test/v1"
    price = Price.objects.get(model="large-2")
    assert (price.input_usd_per_mtok, price.cached_input_usd_per_mtok, price.output_usd_per_mtok) == (
        Decimal("0.5"),
        Decimal("0.25"),
        Decimal("1.5"),
    )
    assert "2 provider unchanged, 2 route unchanged, 1 price unchanged" in run("gateway_apply", str(path))
    assert Price.objects.filter(model="large-2").count() == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("providers: [{name: a}]", "providers\\[0\\] is missing base_url"),
        ("routes: [{model: m, provider: ghost}]", "unknown provider 'ghost'"),
        ("prices: [{model: m, input: -1, output: 1}]", "must be a finite number >= 0"),
        ("prices: [{model: m, input: 1}]", "missing output"),
        ("teams: []", "unknown sections: teams"),
        ("- just a list", "must be a mapping"),
        ("providers: [{name: a, base_url: 'http://x', kind: magic}]", "unknown provider kind 'magic'"),
    ],
)
def test_gateway_apply_refuses_an_invalid_file_and_applies_none_of_it(tmp_path: Path, text: str, message: str) -> None:
    valid_first = "providers: [{name: first, base_url: 'https://first.test/v1'}]\n"
    document = text if text.startswith("- ") else valid_first + text
    with pytest.raises(CommandError, match=message):
        run("gateway_apply", str(write(tmp_path, document)))
    assert not Provider.objects.filter(name="first").exists()  # all or nothing


def test_the_catalog_uses_the_price_in_force_and_expires_when_the_next_one_starts() -> None:
    provider = Provider.objects.create(name="cat", base_url="https://cat.test/v1")
    route("cat-model", provider, "up")
    now = timezone.now()
    price_set(model="up", input_usd=Decimal(1), output_usd=Decimal(2), effective_from=now - dt.timedelta(days=1))
    price_set(model="up", input_usd=Decimal(3), output_usd=Decimal(4), effective_from=now + dt.timedelta(hours=1))
    catalog = catalog_load()
    price = catalog.resolve("cat-model").deployments[0].price
    assert price is not None and price.base.input == 1_000_000_000
    assert catalog.valid_until == pytest.approx((now + dt.timedelta(hours=1)).timestamp())


def test_inactive_routes_and_providers_are_not_served() -> None:
    off = Provider.objects.create(name="off", base_url="https://off.test/v1", is_active=False)
    on = Provider.objects.create(name="on", base_url="https://on.test/v1")
    route("via-off", off)
    route("disabled", on, is_active=False)
    catalog = catalog_load()
    assert catalog.resolve("via-off") is None and catalog.resolve("disabled") is None


def test_a_credential_that_cannot_be_decrypted_does_not_take_other_routes_down() -> None:
    broken = Provider.objects.create(name="broken", base_url="https://b.test/v1", api_key_encrypted="garbage")
    fine = Provider.objects.create(name="fine", base_url="https://f.test/v1")
    route("b", broken)
    route("f", fine)
    catalog = catalog_load()
    assert catalog.resolve("f") is not None
    assert catalog.resolve("b").deployments[0].provider.api_key == ""
