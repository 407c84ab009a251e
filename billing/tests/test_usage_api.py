"""GET /v1/usage through the gateway under daphne: a key sees its tenant's usage, exactly, and nothing else."""

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from conftest import IssuedKey, Ledger
from proxy.tests.live import LiveGateway

pytestmark = pytest.mark.usefixtures("live_gateway")

# gpt-test is gpt-up upstream, priced $0.15/M input and $0.60/M output; the fake
# answers 12 prompt and 20 completion tokens: 12 x 150 + 20 x 600 = 13_800 nanos.
REQUEST_COST_NANOS = 13_800
CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
ZERO = {
    "requests": 0,
    "errors": 0,
    "cache_hits": 0,
    "input_tokens": 0,
    "cached_input_tokens": 0,
    "cache_write_tokens": 0,
    "output_tokens": 0,
    "reasoning_tokens": 0,
    "cost_usd": "0.000000000",
    "saved_usd": "0.000000000",
}


def call(gateway: LiveGateway, path: str, headers: dict[str, str], body: Any = None) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **headers}
    request = urllib.request.Request(gateway.url + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def usage(gateway: LiveGateway, key: IssuedKey, query: str = "") -> tuple[int, dict[str, Any]]:
    return call(gateway, f"/v1/usage{query}", key.headers)


@dataclass(frozen=True)
class Traffic:
    first: IssuedKey  # three gpt-test requests and one upstream error
    second: IssuedKey  # another key of the same tenant: one gpt-test request
    first_prefix: str
    second_prefix: str
    days: list[str]  # the UTC days the records fell on


@pytest.fixture
def traffic(
    live_gateway: LiveGateway, issue_key: Callable[..., IssuedKey], ledger: Ledger, django_db_blocker: Any
) -> Traffic:
    from accounts.models import ApiKey, Tenant
    from accounts.services import api_key_issue
    from billing.rollups import usage_rollup

    first = issue_key()
    with django_db_blocker.unblock():
        plaintext, second_key = api_key_issue(tenant=Tenant.objects.get(pk=first.tenant_id), name="batch jobs")
        first_prefix = ApiKey.objects.get(pk=first.key_id).prefix
    second = IssuedKey(plaintext=plaintext, key_id=second_key.pk, tenant_id=first.tenant_id)
    for _ in range(3):
        assert call(live_gateway, "/v1/chat/completions", first.headers, CHAT)[0] == 200
    assert call(live_gateway, "/v1/chat/completions", first.headers, {**CHAT, "model": "fake/fake-error-500"})[0] == 500
    assert call(live_gateway, "/v1/chat/completions", second.headers, CHAT)[0] == 200
    records = ledger.wait(first.key_id, 4) + ledger.wait(second.key_id, 1)
    assert sorted(r.cost_nanos for r in records) == [0] + [REQUEST_COST_NANOS] * 4
    with django_db_blocker.unblock():
        usage_rollup()
    days = sorted({r.created_at.date().isoformat() for r in records})
    return Traffic(first, second, first_prefix, second_key.prefix, days)


def test_usage_by_model_adds_up_the_tenants_requests_to_the_nano_dollar(
    live_gateway: LiveGateway, traffic: Traffic
) -> None:
    status, body = usage(live_gateway, traffic.first, "?group_by=model")

    assert status == 200
    assert body["object"] == "usage"
    assert body["group_by"] == "model"
    assert body["data"] == [
        {"model": "fake/fake-error-500", **ZERO, "requests": 1, "errors": 1},
        {
            "model": "gpt-test",
            **ZERO,
            "requests": 4,
            "input_tokens": 48,
            "output_tokens": 80,
            "cost_usd": "0.000055200",
        },
    ]
    assert body["total"] == {
        **ZERO,
        "requests": 5,
        "errors": 1,
        "input_tokens": 48,
        "output_tokens": 80,
        "cost_usd": "0.000055200",
    }


def test_usage_by_key_names_keys_by_prefix_and_name_and_never_by_digest(
    live_gateway: LiveGateway, traffic: Traffic, django_db_blocker: Any
) -> None:
    from accounts.models import ApiKey

    status, body = usage(live_gateway, traffic.second, "?group_by=key")  # any key of the tenant sees all its keys

    assert status == 200
    by_prefix = {row["key"]["prefix"]: row for row in body["data"]}
    assert by_prefix == {
        traffic.first_prefix: {
            "key": {"prefix": traffic.first_prefix, "name": "test"},
            **ZERO,
            "requests": 4,
            "errors": 1,
            "input_tokens": 36,
            "output_tokens": 60,
            "cost_usd": "0.000041400",
        },
        traffic.second_prefix: {
            "key": {"prefix": traffic.second_prefix, "name": "batch jobs"},
            **ZERO,
            "requests": 1,
            "input_tokens": 12,
            "output_tokens": 20,
            "cost_usd": "0.000013800",
        },
    }
    with django_db_blocker.unblock():
        keys = ApiKey.objects.filter(pk__in=[traffic.first.key_id, traffic.second.key_id])
        digests = list(keys.values_list("digest", flat=True))
    assert not any(digest in json.dumps(body) for digest in digests)


def test_usage_by_day_covers_the_last_30_days_by_default(live_gateway: LiveGateway, traffic: Traffic) -> None:
    status, body = usage(live_gateway, traffic.first)

    assert status == 200
    assert body["group_by"] == "day"
    assert body["start"] < traffic.days[0] <= traffic.days[-1] < body["end"]
    assert [row["day"] for row in body["data"]] == traffic.days
    if len(traffic.days) == 1:  # the requests did not straddle midnight UTC
        assert body["data"][0] == {
            "day": traffic.days[0],
            **ZERO,
            "requests": 5,
            "errors": 1,
            "input_tokens": 48,
            "output_tokens": 80,
            "cost_usd": "0.000055200",
        }
    assert body["total"]["cost_usd"] == "0.000055200"


def test_an_explicit_range_ends_before_its_end_day(live_gateway: LiveGateway, traffic: Traffic) -> None:
    day = traffic.days[0]

    status, body = usage(live_gateway, traffic.first, f"?start={day}&end={day}T00:00:00Z")
    assert status == 400
    assert body["error"]["param"] == "end"

    status, body = usage(live_gateway, traffic.first, f"?start={day}T13:00:00Z&end={traffic.days[-1]}T00:00:01Z")
    assert status == 200
    assert (body["start"], [row["day"] for row in body["data"]]) == (day, traffic.days)

    status, body = usage(live_gateway, traffic.first, f"?start=2020-01-01&end={day}")
    assert (status, body["data"], body["total"]) == (200, [], ZERO)


def test_another_tenants_key_sees_none_of_this_usage(
    live_gateway: LiveGateway, traffic: Traffic, issue_key: Callable[..., IssuedKey]
) -> None:
    stranger = issue_key()
    for group_by in ("day", "model", "key"):
        status, body = usage(live_gateway, stranger, f"?group_by={group_by}")
        assert status == 200
        assert (body["data"], body["total"]) == ([], ZERO)
        assert traffic.first_prefix not in json.dumps(body)


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("?group_by=tenant", "group_by"),
        ("?start=yesterday", "start"),
        ("?end=2025-02-30", "end"),
        ("?start=2025-03-05&end=2025-03-04", "end"),
    ],
    ids=["group_by", "start", "end", "end-before-start"],
)
def test_a_bad_parameter_is_a_400_in_the_openai_envelope(
    live_gateway: LiveGateway, issue_key: Callable[..., IssuedKey], query: str, param: str
) -> None:
    status, body = usage(live_gateway, issue_key(), query)
    assert status == 400
    assert set(body) == {"error"}
    assert (body["error"]["code"], body["error"]["type"], body["error"]["param"]) == (
        "invalid_request",
        "invalid_request_error",
        param,
    )
    assert body["error"]["message"]


def test_usage_without_a_key_is_a_401(live_gateway: LiveGateway) -> None:
    status, body = call(live_gateway, "/v1/usage", {})
    assert status == 401
    assert (body["error"]["code"], body["error"]["type"]) == ("missing_api_key", "authentication_error")
