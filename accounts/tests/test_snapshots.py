"""The request path's key lookup: one query on a miss, none on a hit, dropped on change.

The lookup is async; these tests drive it through `async_to_sync` from sync
tests, so its `sync_to_async` load runs on the test's own thread and
connection and sees the rows the test created inside its transaction.
"""

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync

from accounts import signals, snapshots
from accounts.models import ApiKey, Tenant
from accounts.services import api_key_issue, api_key_revoke, tenant_create
from gateway.kernel.context import TenantContext

pytestmark = pytest.mark.django_db

lookup = async_to_sync(snapshots.tenant_context_for_key)


@pytest.fixture(autouse=True)
def empty_snapshots() -> Iterator[None]:
    snapshots.invalidate_all()
    yield
    snapshots.invalidate_all()


@pytest.fixture
def tenant() -> Tenant:
    return tenant_create(slug="acme", name="Acme Corp")


def test_a_first_lookup_makes_exactly_one_query(tenant: Tenant, django_assert_num_queries: Any) -> None:
    plaintext, api_key = api_key_issue(tenant=tenant, name="ci")

    with django_assert_num_queries(1):
        ctx = lookup(plaintext)

    assert ctx is not None
    assert (ctx.key_id, ctx.tenant_id, ctx.tenant_slug) == (api_key.pk, tenant.pk, "acme")


def test_a_second_lookup_of_the_same_key_makes_no_query(tenant: Tenant, django_assert_num_queries: Any) -> None:
    plaintext, api_key = api_key_issue(tenant=tenant)
    first = lookup(plaintext)

    with django_assert_num_queries(0):
        second = lookup(plaintext)

    assert second is first  # the very same frozen snapshot
    assert second is not None and second.key_id == api_key.pk


def test_a_revoked_key_is_not_found(tenant: Tenant) -> None:
    plaintext, api_key = api_key_issue(tenant=tenant)
    api_key_revoke(api_key=api_key)

    assert lookup(plaintext) is None


def test_an_unknown_key_is_not_found_and_is_remembered_as_unknown(django_assert_num_queries: Any) -> None:
    with django_assert_num_queries(1):
        assert lookup("sk-gw-no-such-key") is None
    with django_assert_num_queries(0):
        assert lookup("sk-gw-no-such-key") is None


def test_an_unknown_key_is_looked_up_again_once_the_negative_cache_expires(
    settings: Any, django_assert_num_queries: Any
) -> None:
    settings.ACCOUNTS_NEGATIVE_CACHE_SECONDS = 0

    assert lookup("sk-gw-no-such-key") is None
    with django_assert_num_queries(1):
        assert lookup("sk-gw-no-such-key") is None


def test_a_remembered_unknown_key_does_not_hide_a_different_key(tenant: Tenant, django_assert_num_queries: Any) -> None:
    plaintext, api_key = api_key_issue(tenant=tenant)
    assert lookup("sk-gw-no-such-key") is None

    with django_assert_num_queries(1):
        ctx = lookup(plaintext)

    assert ctx is not None and ctx.key_id == api_key.pk


def test_invalidate_all_drops_known_and_unknown_keys(tenant: Tenant, django_assert_num_queries: Any) -> None:
    plaintext, _ = api_key_issue(tenant=tenant)
    assert lookup(plaintext) is not None
    assert lookup("sk-gw-no-such-key") is None

    snapshots.invalidate_all()

    with django_assert_num_queries(1):
        assert lookup(plaintext) is not None
    with django_assert_num_queries(1):
        assert lookup("sk-gw-no-such-key") is None


def test_invalidate_all_also_runs_the_registered_invalidators(monkeypatch: Any) -> None:
    calls: list[str] = []
    monkeypatch.setattr(snapshots, "_invalidators", [lambda: calls.append("routes"), lambda: calls.append("prices")])

    snapshots.invalidate_all()

    assert calls == ["routes", "prices"]


def test_a_keys_context_carries_its_models_tags_expiry_and_prefix(tenant: Tenant) -> None:
    expires_at = dt.datetime(2031, 5, 17, 12, 30, tzinfo=dt.UTC)
    plaintext, api_key = api_key_issue(
        tenant=tenant,
        name="ci",
        allowed_models=["gpt-test", "openai/*"],
        tags=["team-a", "prod"],
        expires_at=expires_at,
    )

    ctx = lookup(plaintext)

    assert ctx == TenantContext(
        tenant_id=tenant.pk,
        tenant_slug="acme",
        tenant_active=True,
        key_id=api_key.pk,
        key_prefix=plaintext[:12],
        allowed_models=("gpt-test", "openai/*"),
        expires_at=expires_at,
        tags=("team-a", "prod"),
    )
    assert ctx.allows("gpt-test")
    assert ctx.allows("openai/gpt-4o")
    assert not ctx.allows("anthropic/claude")
    assert not ctx.is_expired(dt.datetime(2031, 5, 17, 12, 29, tzinfo=dt.UTC))
    assert ctx.is_expired(expires_at)


def test_an_unrestricted_key_allows_every_model_and_never_expires(tenant: Tenant) -> None:
    plaintext, _ = api_key_issue(tenant=tenant)

    ctx = lookup(plaintext)

    assert ctx is not None
    assert (ctx.allowed_models, ctx.expires_at, ctx.tags) == (None, None, ())
    assert ctx.allows("anything/at-all")
    assert not ctx.is_expired(dt.datetime(2999, 1, 1, tzinfo=dt.UTC))


def test_a_key_of_a_deactivated_tenant_is_found_but_marked_inactive(tenant: Tenant) -> None:
    plaintext, _ = api_key_issue(tenant=tenant)
    Tenant.objects.filter(pk=tenant.pk).update(is_active=False)

    ctx = lookup(plaintext)

    assert ctx is not None
    assert ctx.tenant_active is False


def test_saving_a_tenant_bumps_the_config_version_by_one(tenant: Tenant) -> None:
    before = snapshots.config_version_read()

    tenant.name = "Acme Inc"
    tenant.save()

    assert snapshots.config_version_read() == before + 1


def test_issuing_revoking_and_deleting_keys_each_bump_the_config_version(tenant: Tenant) -> None:
    start = snapshots.config_version_read()

    _, api_key = api_key_issue(tenant=tenant)
    assert snapshots.config_version_read() == start + 1
    api_key_revoke(api_key=api_key)
    assert snapshots.config_version_read() == start + 2
    ApiKey.objects.get(pk=api_key.pk).delete()
    assert snapshots.config_version_read() == start + 3


def test_a_raw_save_from_loaddata_does_not_bump_the_config_version(tenant: Tenant) -> None:
    before = snapshots.config_version_read()

    signals._changed(sender=Tenant, instance=tenant, raw=True)

    assert snapshots.config_version_read() == before


def test_a_change_drops_this_process_snapshots_when_the_transaction_commits(
    tenant: Tenant, django_assert_num_queries: Any, django_capture_on_commit_callbacks: Any
) -> None:
    plaintext, _ = api_key_issue(tenant=tenant)
    assert lookup(plaintext) is not None

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        tenant.name = "Acme Inc"
        tenant.save()
        # Not yet committed: the snapshot still answers, without a query.
        with django_assert_num_queries(0):
            assert lookup(plaintext) is not None

    assert snapshots.invalidate_all in callbacks
    with django_assert_num_queries(1):
        assert lookup(plaintext) is not None


def test_a_cached_key_revoked_and_committed_is_refused_at_once(
    tenant: Tenant, django_capture_on_commit_callbacks: Any
) -> None:
    plaintext, api_key = api_key_issue(tenant=tenant)
    assert lookup(plaintext) is not None

    with django_capture_on_commit_callbacks(execute=True):
        api_key_revoke(api_key=api_key)

    assert lookup(plaintext) is None


def test_an_edited_key_is_seen_with_its_new_models_after_commit(
    tenant: Tenant, django_capture_on_commit_callbacks: Any
) -> None:
    plaintext, api_key = api_key_issue(tenant=tenant, allowed_models=["gpt-test"])
    assert lookup(plaintext).allowed_models == ("gpt-test",)

    with django_capture_on_commit_callbacks(execute=True):
        api_key.allowed_models = ["fake/*"]
        api_key.save()

    assert lookup(plaintext).allowed_models == ("fake/*",)


def test_a_key_created_after_being_remembered_as_unknown_is_found_after_commit(
    tenant: Tenant, monkeypatch: Any, django_capture_on_commit_callbacks: Any
) -> None:
    plaintext = "sk-gw-chosen-before-it-existed"
    assert lookup(plaintext) is None  # now remembered as unknown
    monkeypatch.setattr("accounts.services.key_generate", lambda: plaintext)

    with django_capture_on_commit_callbacks(execute=True):
        _, api_key = api_key_issue(tenant=tenant)

    ctx = lookup(plaintext)
    assert ctx is not None and ctx.key_id == api_key.pk


def test_a_load_that_raced_an_invalidation_is_not_kept(
    tenant: Tenant, monkeypatch: Any, django_assert_num_queries: Any
) -> None:
    plaintext, api_key = api_key_issue(tenant=tenant)
    real_load = snapshots._load

    def load_then_invalidated(digest: str) -> TenantContext | None:
        ctx = real_load(digest)
        snapshots.invalidate_all()  # a config change landed while the query ran
        return ctx

    monkeypatch.setattr(snapshots, "_load", load_then_invalidated)
    ctx = lookup(plaintext)
    monkeypatch.setattr(snapshots, "_load", real_load)

    assert ctx is not None and ctx.key_id == api_key.pk  # this request still gets its answer
    with django_assert_num_queries(1):  # but the possibly stale context was not cached
        assert lookup(plaintext) is not None


def test_the_sync_loader_returns_none_for_a_revoked_digest_and_a_context_for_a_live_one(tenant: Tenant) -> None:
    _, live_key = api_key_issue(tenant=tenant)
    _, revoked_key = api_key_issue(tenant=tenant)
    api_key_revoke(api_key=revoked_key)

    ctx = snapshots._load(live_key.digest)
    assert ctx is not None and ctx.key_id == live_key.pk
    assert snapshots._load(revoked_key.digest) is None
    assert snapshots._load("0" * 64) is None
