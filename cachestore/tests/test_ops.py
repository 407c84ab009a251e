"""Running the cache: expiry of database rows, what stats count, and the stats and purge API under daphne."""

import datetime as dt
import json
import os
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import ApiKey
from accounts.services import api_key_issue, tenant_create
from billing.models import UsageRecord
from billing.rollups import usage_rollup
from cachestore.entry import CachedEntry, entry_dumps
from cachestore.models import CacheEntryRecord
from cachestore.services import cache_expire, cache_usage
from cachestore.store import build_store
from conftest import IssuedKey
from gateway.kernel.context import Usage
from gateway.kernel.redis import redis_client_for
from proxy.tests.live import LiveGateway

# --- expiry -------------------------------------------------------------------------------


def cache_rows(tenant_id: int, *, expired: int, fresh: int) -> list[int]:
    now = timezone.now()
    rows = []
    for i in range(expired + fresh):
        expires_at = now + dt.timedelta(hours=-1 if i < expired else 1)
        rows.append(
            CacheEntryRecord(
                tenant_id=tenant_id,
                key=uuid.uuid4().hex,
                endpoint="chat.completions",
                model="gpt-test",
                payload=b"r{}",
                size_bytes=3,
                created_at=now - dt.timedelta(hours=2),
                expires_at=expires_at,
            )
        )
    return [row.pk for row in CacheEntryRecord.objects.bulk_create(rows)]


@pytest.mark.django_db
def test_expiry_deletes_only_expired_rows_in_batches_and_returns_the_count() -> None:
    cache_expire()  # rows other tests committed and left to expire are not this test's
    tenant = tenant_create(slug="expiring")
    ids = cache_rows(tenant.pk, expired=5, fresh=2)

    with CaptureQueriesContext(connection) as queries:
        deleted = cache_expire(batch_size=2)

    assert deleted == 5
    assert sorted(CacheEntryRecord.objects.filter(tenant=tenant).values_list("pk", flat=True)) == ids[5:]
    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].lstrip().upper().startswith("DELETE")]
    assert len(deletes) == 3  # 2 + 2 + 1
    assert cache_expire(batch_size=2) == 0


# --- what stats count -----------------------------------------------------------------------


def usage(api_key: ApiKey, status: str, *, saved: int = 0, when: dt.datetime | None = None) -> UsageRecord:
    return UsageRecord.objects.create(
        request_id=f"req_{uuid.uuid4().hex}",
        created_at=when or timezone.now(),
        tenant_id=api_key.tenant_id,
        api_key=api_key,
        endpoint="chat.completions",
        public_model="gpt-test",
        upstream_model="gpt-up",
        provider="fake",
        status_code=200,
        cache_hit=status == "hit",
        cache_status=status,
        saved_nanos=saved,
        cost_nanos=0 if status == "hit" else 13_800,
    )


@pytest.mark.django_db
def test_hits_and_savings_survive_the_pruning_of_raw_usage_and_misses_count_what_is_kept() -> None:
    _, mine = api_key_issue(tenant=tenant_create(slug="saver"))
    _, theirs = api_key_issue(tenant=tenant_create(slug="other"))
    last_week = timezone.now() - dt.timedelta(days=7)
    for status, saved in [("hit", 1_000), ("hit", 2_000), ("miss", 0), ("bypass", 0), ("", 0)]:
        usage(mine, status, saved=saved, when=last_week)
    usage(theirs, "hit", saved=7, when=last_week)
    usage_rollup()
    usage(mine, "hit", saved=500)  # not rolled up yet
    usage(mine, "miss")

    before_pruning = cache_usage(mine.tenant_id)
    UsageRecord.objects.filter(tenant_id=mine.tenant_id, rolled_up=True).delete()  # as retention would

    assert before_pruning == {"hits": 3, "misses": 2, "saved_nanos": 3_500}
    assert cache_usage(mine.tenant_id) == {"hits": 3, "misses": 1, "saved_nanos": 3_500}
    assert cache_usage(theirs.tenant_id) == {"hits": 1, "misses": 0, "saved_nanos": 7}
    everyone = cache_usage(None)
    assert everyone["hits"] >= 4 and everyone["saved_nanos"] >= 3_507  # other tests' committed rows may add


# --- the API under daphne ------------------------------------------------------------------


def call(gateway: LiveGateway, method: str, path: str, key: IssuedKey | None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        gateway.url + path, method=method, data=b"" if method == "POST" else None, headers=key.headers if key else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def entry(key: IssuedKey, name: str) -> CachedEntry:
    now = time.time()
    return CachedEntry(
        tenant_id=key.tenant_id,
        key=uuid.uuid5(uuid.NAMESPACE_URL, f"{key.tenant_id}/{name}").hex * 2,
        endpoint="chat.completions",
        model="gpt-test",
        body=b'{"id":"chatcmpl-' + name.encode() + b'"}',
        usage=Usage(input_tokens=12, output_tokens=20),
        cost_nanos=13_800,
        created_at=now,
        expires_at=now + 120,
    )


@pytest.fixture
def gateway_store(settings: Any, django_db_blocker: Any) -> Callable[..., None]:
    """Puts entries where the gateway under test looks: its database, or its
    Redis under the prefix this process exported to it."""
    settings.REDIS_KEY_PREFIX = os.environ["REDIS_KEY_PREFIX"]

    def put(*entries: CachedEntry) -> None:
        async def store_them() -> None:
            store = build_store()
            try:
                for one in entries:
                    await store.set(one)
            finally:
                if settings.REDIS_URL:
                    await redis_client_for(settings.REDIS_URL).aclose()

        with django_db_blocker.unblock():
            async_to_sync(store_them)()

    return put


def record_usage(django_db_blocker: Any, key: IssuedKey, status: str, saved: int = 0) -> None:
    with django_db_blocker.unblock():
        usage(ApiKey.objects.get(pk=key.key_id), status, saved=saved)


def test_a_key_sees_only_its_own_tenants_cache_stats(
    live_gateway: LiveGateway,
    issue_key: Callable[..., IssuedKey],
    gateway_store: Callable[..., None],
    django_db_blocker: Any,
) -> None:
    mine, theirs = issue_key(), issue_key()
    held = [entry(mine, "one"), entry(mine, "two")]
    gateway_store(*held, entry(theirs, "one"))
    record_usage(django_db_blocker, mine, "hit", saved=13_800)
    record_usage(django_db_blocker, mine, "miss")
    record_usage(django_db_blocker, theirs, "hit", saved=5)

    status, body = call(live_gateway, "GET", "/v1/cache/stats", mine)
    _, other = call(live_gateway, "GET", "/v1/cache/stats", theirs)

    assert status == 200
    assert body == {
        "object": "cache.stats",
        "entries": 2,
        "size_bytes": sum(len(entry_dumps(e)) for e in held),
        "hits": 1,
        "misses": 1,
        "saved_usd": "0.000013800",
    }
    assert (other["entries"], other["hits"], other["misses"], other["saved_usd"]) == (1, 1, 0, "0.000000005")


def test_purge_deletes_the_callers_entries_and_no_one_elses(
    live_gateway: LiveGateway, issue_key: Callable[..., IssuedKey], gateway_store: Callable[..., None]
) -> None:
    mine, theirs = issue_key(), issue_key()
    gateway_store(entry(mine, "one"), entry(mine, "two"), entry(mine, "three"), entry(theirs, "one"))

    status, body = call(live_gateway, "POST", "/v1/cache/purge", mine)
    _, after = call(live_gateway, "GET", "/v1/cache/stats", mine)
    _, other = call(live_gateway, "GET", "/v1/cache/stats", theirs)
    _, again = call(live_gateway, "POST", "/v1/cache/purge", mine)

    assert (status, body) == (200, {"object": "cache.purge", "purged": 3})
    assert (after["entries"], after["size_bytes"]) == (0, 0)
    assert other["entries"] == 1
    assert again == {"object": "cache.purge", "purged": 0}


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/cache/stats"), ("POST", "/v1/cache/purge")])
def test_the_cache_endpoints_refuse_a_request_without_a_key(live_gateway: LiveGateway, method: str, path: str) -> None:
    status, body = call(live_gateway, method, path, None)
    assert status == 401
    assert body["error"]["code"] == "missing_api_key"


# --- the admin ---------------------------------------------------------------------------------


@pytest.fixture
def process_store(settings: Any) -> Callable[..., Any]:
    """Runs one call on the process's store (Redis under a prefix of this test's own, or the database)."""
    from cachestore.store import cache_store

    settings.REDIS_KEY_PREFIX = f"cacheadmin-{uuid.uuid4().hex[:12]}"

    def on_store(method: str, *args: Any) -> Any:
        async def call_then_close() -> Any:
            try:
                return await getattr(cache_store(), method)(*args)
            finally:
                if settings.REDIS_URL:
                    await redis_client_for(settings.REDIS_URL).aclose()

        return async_to_sync(call_then_close)()

    return on_store


@pytest.mark.django_db
def test_staff_see_each_tenants_cache_and_purge_the_selected_ones(
    admin_client: Any, process_store: Callable[..., Any]
) -> None:
    _, mine = api_key_issue(tenant=tenant_create(slug="cached-mine"))
    _, theirs = api_key_issue(tenant=tenant_create(slug="cached-theirs"))
    me = IssuedKey(plaintext="", key_id=mine.pk, tenant_id=mine.tenant_id)
    them = IssuedKey(plaintext="", key_id=theirs.pk, tenant_id=theirs.tenant_id)
    for one in (entry(me, "one"), entry(me, "two"), entry(them, "one")):
        process_store("set", one)
    usage(mine, "hit", saved=13_800)

    page = admin_client.get("/admin/cachestore/tenantcache/?q=cached-mine").content.decode()
    response = admin_client.post(
        "/admin/cachestore/tenantcache/", {"action": "purge_selected", "_selected_action": [me.tenant_id]}, follow=True
    )

    assert '<td class="field-entries">2</td>' in page
    assert '<td class="field-hits">1</td>' in page and '<td class="field-saved">0.000013800</td>' in page
    assert "Purged 2 cached answers of 1 tenants." in response.content.decode()
    assert process_store("stats", me.tenant_id)["entries"] == 0
    assert process_store("stats", them.tenant_id)["entries"] == 1


@pytest.mark.django_db
def test_the_cache_entries_are_listed_read_only(admin_client: Any) -> None:
    tenant = tenant_create(slug="listed")
    cache_rows(tenant.pk, expired=1, fresh=1)

    listing = admin_client.get("/admin/cachestore/cacheentryrecord/?state=fresh")

    html = listing.content.decode()
    assert listing.status_code == 200
    assert html.count('<th class="field-tenant') == 1  # the fresh row only
    assert 'alt="True"' in html and 'alt="False"' not in html
    assert admin_client.get("/admin/cachestore/cacheentryrecord/add/").status_code == 403
