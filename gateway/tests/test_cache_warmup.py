"""cache_warmup: a tenant's cache filled from a JSON Lines file, billed to the
tenant, then served as hits to its caching keys by the gateway under daphne."""

import json
import urllib.request
from collections.abc import Callable
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from conftest import IssuedKey, unique_marker, wait_until
from proxy.tests.fake_upstream import FakeUpstream
from proxy.tests.live import LiveGateway

pytestmark = pytest.mark.usefixtures("live_gateway")


def body(marker: str, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-test", "messages": [{"role": "user", "content": marker}], **extra}


def ask(gateway: LiveGateway, key: IssuedKey, payload: dict[str, Any]) -> tuple[str, bytes]:
    request = urllib.request.Request(
        gateway.url + "/v1/chat/completions",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", **key.headers},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.headers["x-cache"], response.read()


def warm(blocker: Any, slug: str, path: Path, *args: str) -> str:
    out = StringIO()
    with blocker.unblock():
        call_command("cache_warmup", slug, "--file", str(path), *args, stdout=out, stderr=StringIO())
    return out.getvalue().strip()


def test_warmed_requests_are_hits_for_the_tenants_caching_keys_and_the_warmup_is_billed_to_the_tenant(
    live_gateway: LiveGateway,
    issue_key: Callable[..., IssuedKey],
    fake_upstream: FakeUpstream,
    django_db_blocker: Any,
    tmp_path: Path,
) -> None:
    from accounts.models import ApiKey, Tenant
    from billing.models import UsageRecord

    client = issue_key(cache_ttl_seconds=600)
    with django_db_blocker.unblock():
        slug = Tenant.objects.get(pk=client.tenant_id).slug
    one, two = unique_marker(), unique_marker()
    lines = [json.dumps(body(one)), "", "not json", json.dumps(body(two, stream=True, temperature=0))]
    path = tmp_path / "warm.jsonl"
    path.write_text("\n".join(lines) + "\n")

    assert warm(django_db_blocker, slug, path, "--cache-ttl", "600") == "2 stored, 0 cached already, 1 failed"

    assert ask(live_gateway, client, body(one))[0] == "hit"
    assert ask(live_gateway, client, body(two, temperature=0))[0] == "hit"  # stored streamed, served as JSON
    assert sum(one in str(r.body.get("messages")) for r in fake_upstream.requests) == 1
    with django_db_blocker.unblock():
        warmup_key = ApiKey.objects.get(tenant_id=client.tenant_id, name="cache_warmup")
        rows = list(UsageRecord.objects.filter(api_key=warmup_key))
    assert warmup_key.revoked_at is not None  # issued for the run only
    assert sorted((r.status_code, r.cache_status, r.cost_nanos > 0) for r in rows) == [(200, "miss", True)] * 2
    assert {r.tenant_id for r in rows} == {client.tenant_id}

    assert warm(django_db_blocker, slug, path, "--cache-ttl", "600") == "0 stored, 2 cached already, 1 failed"


def test_cache_warmup_refuses_a_tenant_without_a_cache_lifetime(
    issue_key: Callable[..., IssuedKey], django_db_blocker: Any, tmp_path: Path
) -> None:
    from accounts.models import Tenant

    key = issue_key()
    with django_db_blocker.unblock():
        slug = Tenant.objects.get(pk=key.tenant_id).slug
    path = tmp_path / "warm.jsonl"
    path.write_text(json.dumps(body("x")) + "\n")
    with pytest.raises(CommandError, match="no cache lifetime"):
        warm(django_db_blocker, slug, path)
    with pytest.raises(CommandError, match="no tenant"):
        warm(django_db_blocker, "nobody-at-all", path)


def test_save_popular_writes_the_most_hit_requests_first_and_another_tenant_warms_from_them(
    live_gateway: LiveGateway,
    issue_key: Callable[..., IssuedKey],
    django_db_blocker: Any,
    tmp_path: Path,
) -> None:
    from accounts.models import Tenant

    client, other = issue_key(cache_ttl_seconds=600), issue_key(cache_ttl_seconds=600)
    with django_db_blocker.unblock():
        slug, other_slug = (Tenant.objects.get(pk=k.tenant_id).slug for k in (client, other))
    most, less, never = body(unique_marker()), body(unique_marker(), temperature=0.5), body(unique_marker())
    for payload, times in ((most, 4), (less, 2), (never, 1)):  # the first of each is the miss
        for _ in range(times):
            ask(live_gateway, client, payload)
    path = tmp_path / "popular.jsonl"

    def popular() -> (
        tuple[str, list[Any]] | None
    ):  # the gateway writes its hit counts every CACHESTORE_HITS_FLUSH_SECONDS
        said = warm(django_db_blocker, slug, path, "--save-popular", "2")
        saved = [json.loads(line) for line in path.read_text().splitlines()]
        return (said, saved) if len(saved) == 2 and saved[0] == most else None

    said, saved = wait_until(popular, 20, lambda: path.read_text())
    assert said == f"2 popular requests of {slug} written to {path}"
    assert saved == [most, less]  # the entry hit 3 times first; the one never hit is left out

    assert warm(django_db_blocker, other_slug, path, "--cache-ttl", "600") == "2 stored, 0 cached already, 0 failed"
    assert ask(live_gateway, other, less)[0] == "hit"
