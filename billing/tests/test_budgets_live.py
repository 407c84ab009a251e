"""Budgets, prepaid credit and the books, through the gateway under daphne.

On the PostgreSQL + Redis run the gateway reserves in Redis; on the default
run, in its own memory. The assertions are the same.
"""

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections import Counter
from decimal import Decimal
from typing import Any

import aiohttp
import openai
import pytest

from conftest import IssuedKey, Ledger
from proxy.tests.live import LiveGateway

pytestmark = pytest.mark.usefixtures("live_gateway")

# The fake answers with 20 output tokens: at $1/M (input free) that is
# 20 x 1_000 = 20_000 nanos, and max_tokens=20 makes the worst case the same.
REQUEST_COST = 20_000
BUDGET_REQUEST = {"model": "budget-model", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}


def post(gateway: LiveGateway, key: IssuedKey, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        gateway.url + "/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **key.headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            raw = response.read()
            return response.status, json.loads(raw) if not body.get("stream") else {}
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def with_budget(blocker: Any, key: IssuedKey, usd: str, period: str = "day", on: str = "key") -> Any:
    from accounts.models import ApiKey
    from billing.services import budget_set

    with blocker.unblock():
        api_key = ApiKey.objects.select_related("tenant").get(pk=key.key_id)
        owner = {"api_key": api_key} if on == "key" else {"tenant": api_key.tenant}
        return budget_set(limit_usd=Decimal(usd), period=period, **owner)


def make_prepaid(blocker: Any, key: IssuedKey, credit_usd: str) -> Any:
    from accounts.models import Tenant
    from billing.services import credit_add

    with blocker.unblock():
        tenant = Tenant.objects.get(pk=key.tenant_id)
        tenant.is_prepaid = True
        tenant.save()
        credit_add(tenant=tenant, amount_usd=Decimal(credit_usd))
    return tenant


def spent(blocker: Any, budget: Any) -> int:
    from billing.models import BudgetSpend

    with blocker.unblock():
        return sum(BudgetSpend.objects.filter(budget=budget).values_list("spent_nanos", flat=True))


async def burst(gateway: LiveGateway, key: IssuedKey, count: int) -> list[tuple[int, str]]:
    async def one(session: aiohttp.ClientSession) -> tuple[int, str]:
        async with session.post(gateway.url + "/v1/chat/completions", json=BUDGET_REQUEST, headers=key.headers) as r:
            body = await r.json(content_type=None)
            return r.status, (body.get("error") or {}).get("code", "")

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        return await asyncio.gather(*(one(session) for _ in range(count)))


def test_a_burst_of_100_concurrent_requests_never_overshoots_a_budget_that_fits_10(
    live_gateway: LiveGateway, key: IssuedKey, ledger: Ledger, django_db_blocker: Any
) -> None:
    budget = with_budget(django_db_blocker, key, "0.0002")  # 10 x 20_000 nanos
    time.sleep(0.5)  # the gateway drops its snapshot of the key and reads the new budget

    results = asyncio.run(burst(live_gateway, key, 100))

    outcomes = Counter(results)
    assert outcomes[(200, "")] == 10, outcomes
    assert outcomes[(429, "budget_exceeded")] == 90, outcomes
    records = ledger.wait(key.key_id, 10)
    assert sum(r.cost_nanos for r in records) == 10 * REQUEST_COST
    assert spent(django_db_blocker, budget) == 10 * REQUEST_COST  # never above the $0.0002 limit
    # Once spent, it stays spent: the next request is refused too, with the reset time.
    status, body = post(live_gateway, key, BUDGET_REQUEST)
    assert (status, body["error"]["code"]) == (429, "budget_exceeded")
    assert "resets at" in body["error"]["message"]


def test_a_tenant_budget_covers_every_key_of_the_tenant(
    live_gateway: LiveGateway, issue_key: Any, django_db_blocker: Any
) -> None:
    from accounts.models import ApiKey
    from accounts.services import api_key_issue

    first = issue_key()
    with_budget(django_db_blocker, first, "0.00004", period="month", on="tenant")  # 2 requests
    with django_db_blocker.unblock():
        plaintext, second_key = api_key_issue(tenant=ApiKey.objects.get(pk=first.key_id).tenant)
    second = IssuedKey(plaintext=plaintext, key_id=second_key.pk, tenant_id=first.tenant_id)
    time.sleep(0.5)
    assert post(live_gateway, first, BUDGET_REQUEST)[0] == 200
    assert post(live_gateway, second, BUDGET_REQUEST)[0] == 200
    assert post(live_gateway, second, BUDGET_REQUEST)[0] == 429
    assert post(live_gateway, first, BUDGET_REQUEST)[0] == 429


def test_a_prepaid_tenant_is_served_until_its_credit_is_used_then_refused(
    live_gateway: LiveGateway, issue_key: Any, ledger: Ledger, django_db_blocker: Any
) -> None:
    from billing.services import credit_add, credit_balance_nanos

    key = issue_key()
    tenant = make_prepaid(django_db_blocker, key, "0.00005")  # 2.5 requests' worth
    time.sleep(0.5)
    assert post(live_gateway, key, BUDGET_REQUEST)[0] == 200
    assert post(live_gateway, key, BUDGET_REQUEST)[0] == 200
    status, body = post(live_gateway, key, BUDGET_REQUEST)
    assert (status, body["error"]["code"]) == (402, "insufficient_credit")
    ledger.wait(key.key_id, 2)
    time.sleep(0.3)
    with django_db_blocker.unblock():
        assert credit_balance_nanos(tenant) == 50_000 - 2 * REQUEST_COST
        credit_add(tenant=tenant, amount_usd=Decimal("1"))  # a top-up reaches the gateway within seconds
    deadline = time.monotonic() + 5
    while post(live_gateway, key, BUDGET_REQUEST)[0] != 200:
        assert time.monotonic() < deadline, "the top-up never reached the gateway"
        time.sleep(0.2)


def test_mixed_traffic_leaves_books_that_reconcile_to_the_last_nano(
    live_gateway: LiveGateway, issue_key: Any, ledger: Ledger, django_db_blocker: Any
) -> None:
    from billing.reconcile import books_reconcile

    key = issue_key()
    make_prepaid(django_db_blocker, key, "5")
    with_budget(django_db_blocker, key, "1", period="day")
    with_budget(django_db_blocker, key, "3", period="month", on="tenant")
    time.sleep(0.5)
    client = openai.OpenAI(base_url=live_gateway.url + "/v1", api_key=key.plaintext, max_retries=0)
    chat = {"messages": [{"role": "user", "content": "hello there"}]}
    client.chat.completions.create(model="gpt-test", **chat)
    list(client.chat.completions.create(model="gpt-test", stream=True, **chat))
    client.chat.completions.create(model="fake/fake-cached", **chat)
    for model in ("fake/fake-error-500", "dead-model"):
        with pytest.raises(openai.APIError):
            client.chat.completions.create(model=model, **chat)
    abandoned = client.chat.completions.create(model="fake/fake-slow", stream=True, **chat)
    next(iter(abandoned)), next(iter(abandoned))
    abandoned.close()

    records = ledger.wait(key.key_id, 6)
    assert {r.error_code for r in records} == {"", "fake_500", "upstream_unreachable", "client_disconnected"}
    assert all(r.prepaid for r in records)
    time.sleep(0.3)  # the last batch's spend and credit land with it
    with django_db_blocker.unblock():
        report = books_reconcile()
    assert report.differences == []
    assert report.ok
    assert report.checked["budget spends"] >= 2 and report.checked["prepaid ledgers"] >= 1
