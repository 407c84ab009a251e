"""A budget is never bypassed through prices: name variants find their price, unpriced models are refused."""

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest

from conftest import IssuedKey
from proxy.routing import price_names
from proxy.tests.live import LiveGateway


def test_price_names_follow_litellms_file() -> None:
    assert {"gpt-4o-2024-08-06", "openai/gpt-4o", "gpt-4o"} <= set(price_names("openai/gpt-4o-2024-08-06"))
    assert "fake-budget" in price_names("fake-budget-0613")
    assert "fake-budget" in price_names("FAKE-BUDGET")
    assert "claude-3-5-sonnet" in price_names("claude-3-5-sonnet-20241022")


@pytest.fixture
def spent_key(issue_key: Callable[..., IssuedKey], django_db_blocker: Any) -> IssuedKey:
    """A key whose budget is smaller than one request's worst case (20 tokens at $1/M)."""
    from accounts.models import ApiKey
    from billing.services import budget_set

    key = issue_key()
    with django_db_blocker.unblock():
        budget_set(api_key=ApiKey.objects.get(pk=key.key_id), period="month", limit_usd=Decimal("0.00001"))
    return key


def chat(gateway: LiveGateway, key: IssuedKey, model: str) -> httpx.Response:
    body = {"model": model, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(gateway.url + "/v1/chat/completions", json=body, headers=key.headers, timeout=20)


@pytest.mark.parametrize("model", ["fake/fake-budget", "fake/fake-budget-0613", "fake/FAKE-BUDGET"])
def test_a_spent_key_is_refused_whatever_variant_of_a_priced_name_it_sends(
    live_gateway: LiveGateway, spent_key: IssuedKey, model: str
) -> None:
    answer = chat(live_gateway, spent_key, model)
    assert (answer.status_code, answer.json()["error"]["code"]) == (429, "budget_exceeded")


def test_a_key_with_a_budget_is_refused_a_model_without_a_price(
    live_gateway: LiveGateway, spent_key: IssuedKey
) -> None:
    answer = chat(live_gateway, spent_key, "fake/never-priced-model")
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "model_not_priced"


def test_a_key_without_budget_or_credit_may_use_an_unpriced_model(live_gateway: LiveGateway, key: IssuedKey) -> None:
    assert chat(live_gateway, key, "fake/never-priced-model").status_code == 200
