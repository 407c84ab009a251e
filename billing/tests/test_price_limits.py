"""One mistyped price is refused at every entry, and a bad row already stored is skipped, not an outage."""

from collections.abc import Callable
from decimal import Decimal
from io import StringIO
from typing import Any

import httpx
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from accounts.signals import config_version_bump
from billing.models import Price
from billing.services import price_set
from conftest import IssuedKey
from proxy.catalog_loader import catalog_load
from proxy.tests.live import LiveGateway


@pytest.mark.parametrize("amount", ["1000000000", "1e400", "100001", "-1", "NaN", "Infinity"])
@pytest.mark.django_db
def test_price_set_refuses_an_amount_the_books_cannot_hold_and_stores_nothing(amount: str) -> None:
    with pytest.raises(CommandError):
        call_command("price_set", "typo-model", "--input", amount, "--output", "1", stdout=StringIO())
    assert not Price.objects.filter(model="typo-model").exists()


@pytest.mark.django_db
def test_the_refusal_says_what_a_price_is() -> None:
    with pytest.raises(ValueError, match=r"above the 100000 .*USD per million tokens"):
        price_set(model="m", input_usd=Decimal("1000000000"), output_usd=Decimal(1))


@pytest.mark.django_db
def test_gateway_apply_refuses_an_absurd_price(tmp_path: Any) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("prices:\n  - model: typo-model\n    input: 5000000000\n    output: 1\n")
    with pytest.raises(CommandError, match="above the 100000"):
        call_command("gateway_apply", str(config), stdout=StringIO())
    assert not Price.objects.filter(model="typo-model").exists()


def store_unreadable_price(model: str) -> None:
    """A row as one was stored before amounts were checked: beyond its column."""
    price, _ = price_set(model=model, input_usd=Decimal(1), output_usd=Decimal(1))
    with connection.cursor() as cursor:
        cursor.execute("UPDATE billing_price SET input_usd_per_mtok = %s WHERE id = %s", ["1e30", price.pk])
    config_version_bump()  # every process reloads its catalog, bad row included


@pytest.mark.django_db
def test_the_catalog_loads_without_a_row_it_cannot_read(caplog: Any) -> None:
    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL refuses such a row at the insert: only SQLite ever stored one")
    price_set(model="good-model", input_usd=Decimal(1), output_usd=Decimal(2))
    store_unreadable_price("bad-model")
    catalog = catalog_load()
    assert catalog is not None
    assert "skipped" in caplog.text
    # and the model's price can be set again, superseding the bad row
    _, changed = price_set(model="bad-model", input_usd=Decimal(3), output_usd=Decimal(4))
    assert changed


@pytest.mark.usefixtures("live_gateway")
def test_every_tenant_keeps_being_answered_after_a_bad_row_reached_the_table(
    live_gateway: LiveGateway, issue_key: Callable[..., IssuedKey], django_db_blocker: Any
) -> None:
    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL refuses such a row at the insert: only SQLite ever stored one")
    with django_db_blocker.unblock():
        store_unreadable_price("bad-model-live")  # also bumps the config: every process reloads
    key = issue_key()
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
    answer = httpx.post(live_gateway.url + "/v1/chat/completions", json=body, headers=key.headers, timeout=20)
    assert answer.status_code == 200, answer.text
