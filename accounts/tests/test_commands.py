"""tenant_create, key_create and key_revoke, as an operator runs them."""

import datetime as dt
from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from accounts import snapshots
from accounts.keys import key_digest
from accounts.models import ApiKey, Tenant
from accounts.services import api_key_issue, tenant_create
from gateway.management.commands import key_create


def run(*args: str) -> tuple[str, str]:
    """Run a command with string arguments, as from the shell; returns (stdout, stderr)."""
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def issue(*args: str) -> tuple[str, ApiKey, str]:
    """key_create; returns (plaintext from the last stdout line, its row, stderr)."""
    out, err = run("key_create", *args)
    plaintext = out.splitlines()[-1]
    return plaintext, ApiKey.objects.get(digest=key_digest(plaintext)), err


@pytest.fixture(autouse=True)
def empty_snapshots() -> Iterator[None]:
    snapshots.invalidate_all()
    yield
    snapshots.invalidate_all()


# --- tenant_create -------------------------------------------------------------


@pytest.mark.django_db
def test_tenant_create_creates_the_tenant_and_says_so() -> None:
    out, _ = run("tenant_create", "acme", "--name", "Acme Corp")

    assert out == "created tenant acme\n"
    tenant = Tenant.objects.get(slug="acme")
    assert (tenant.name, tenant.is_active) == ("Acme Corp", True)


@pytest.mark.django_db
def test_tenant_create_without_a_name_uses_the_slug_as_the_name() -> None:
    run("tenant_create", "acme")

    assert Tenant.objects.get(slug="acme").name == "acme"


@pytest.mark.django_db
def test_tenant_create_on_an_existing_slug_is_safe_to_re_run_and_says_unchanged_or_updated() -> None:
    run("tenant_create", "acme", "--name", "First", "--rpm", "60", "--budget", "10", "--budget-period", "day")

    again, _ = run(
        "tenant_create", "acme", "--name", "First", "--rpm", "60", "--budget", "10", "--budget-period", "day"
    )
    assert again == "unchanged tenant acme, budget $10 per day\n"
    bare, _ = run("tenant_create", "acme")  # options left out keep what the tenant has
    assert bare == "unchanged tenant acme\n"
    changed, _ = run("tenant_create", "acme", "--name", "Second", "--tpm", "1000")
    assert changed == "updated tenant acme\n"

    tenant = Tenant.objects.get(slug="acme")
    assert (tenant.name, tenant.rpm_limit, tenant.tpm_limit) == ("Second", 60, 1000)
    assert Tenant.objects.filter(slug="acme").count() == 1


# --- key_create ---------------------------------------------------------------------


@pytest.mark.django_db
def test_key_create_prints_the_key_alone_on_the_last_line_and_it_authenticates() -> None:
    tenant = tenant_create(slug="acme")

    out, err = run("key_create", "acme", "--name", "ci")

    last = out.splitlines()[-1]
    assert out.endswith(last + "\n")
    assert last.startswith("sk-gw-") and len(last) == 49 and last == last.strip()
    api_key = ApiKey.objects.get(digest=key_digest(last))
    assert (api_key.tenant_id, api_key.name, api_key.prefix) == (tenant.pk, "ci", last[:12])
    # The operator is told which key it is, on stderr, without the secret itself.
    assert err == f"issued key {last[:12]}… for tenant acme; it is shown only now:\n"
    assert (out + err).count(last) == 1

    ctx = async_to_sync(snapshots.tenant_context_for_key)(last)
    assert ctx is not None
    assert (ctx.key_id, ctx.tenant_slug) == (api_key.pk, "acme")


@pytest.mark.django_db
def test_key_create_without_options_makes_an_unrestricted_unlabelled_key_that_never_expires() -> None:
    tenant_create(slug="acme")

    _, api_key, _ = issue("acme")

    assert (api_key.allowed_models, api_key.tags, api_key.expires_at, api_key.revoked_at) == (None, [], None, None)


@pytest.mark.django_db
def test_key_create_models_and_tags_are_split_on_commas_and_trimmed() -> None:
    tenant_create(slug="acme")

    _, api_key, _ = issue("acme", "--models", "gpt-test, openai/*", "--tags", "team-a,,prod ")

    assert api_key.allowed_models == ["gpt-test", "openai/*"]
    assert api_key.tags == ["team-a", "prod"]


@pytest.mark.django_db
def test_key_create_expires_in_30d_sets_the_expiry_thirty_days_from_now() -> None:
    tenant_create(slug="acme")

    before = timezone.now()
    _, api_key, _ = issue("acme", "--expires-in", "30d")
    after = timezone.now()

    assert api_key.expires_at is not None
    assert before + dt.timedelta(days=30) <= api_key.expires_at <= after + dt.timedelta(days=30)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", dt.timedelta(seconds=90)),
        ("15m", dt.timedelta(minutes=15)),
        ("12h", dt.timedelta(hours=12)),
        ("2w", dt.timedelta(days=14)),
    ],
)
def test_key_create_accepts_every_duration_unit(text: str, expected: dt.timedelta) -> None:
    tenant_create(slug="acme")

    before = timezone.now()
    _, api_key, _ = issue("acme", "--expires-in", text)
    after = timezone.now()

    assert api_key.expires_at is not None
    assert before + expected <= api_key.expires_at <= after + expected


@pytest.mark.django_db
def test_key_create_for_an_unknown_tenant_says_how_to_create_it() -> None:
    with pytest.raises(CommandError, match=r"^no tenant 'ghost'; create it with: manage.py tenant_create ghost$"):
        run("key_create", "ghost")

    assert not ApiKey.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("text", ["30x", "0d", "-1d", "d", "1.5d", "30"])
def test_key_create_refuses_a_bad_duration_and_issues_nothing(text: str) -> None:
    tenant_create(slug="acme")

    with pytest.raises(CommandError, match=rf"invalid duration '{text}'.*like 30d"):
        run("key_create", "acme", f"--expires-in={text}")

    assert not ApiKey.objects.exists()


def test_a_bad_duration_on_the_real_command_line_is_a_usage_error_not_a_traceback(capsys: Any) -> None:
    command = key_create.Command()

    with pytest.raises(SystemExit) as exit_info:
        command.run_from_argv(["manage.py", "key_create", "acme", "--expires-in", "30x"])

    assert exit_info.value.code != 0
    assert "invalid duration '30x'" in capsys.readouterr().err


# --- key_revoke -----------------------------------------------------------------------


@pytest.mark.django_db
def test_key_revoke_by_prefix_revokes_that_key_only() -> None:
    tenant = tenant_create(slug="acme")
    plaintext, api_key = api_key_issue(tenant=tenant, name="leaked")
    _, other = api_key_issue(tenant=tenant, name="kept")

    out, _ = run("key_revoke", plaintext[:12])

    assert out == f"revoked {plaintext[:12]}… (leaked)\n"
    api_key.refresh_from_db()
    other.refresh_from_db()
    assert api_key.revoked_at is not None
    assert other.revoked_at is None
    assert async_to_sync(snapshots.tenant_context_for_key)(plaintext) is None


@pytest.mark.django_db
def test_key_revoke_accepts_the_prefix_as_displayed_with_its_ellipsis() -> None:
    tenant_create(slug="acme")
    _, api_key, err = issue("acme")
    displayed = err.split()[2]  # "issued key sk-gw-xxxxxx… for tenant acme; ..."
    assert displayed == api_key.prefix + "…"

    run("key_revoke", displayed)

    api_key.refresh_from_db()
    assert api_key.revoked_at is not None


@pytest.mark.django_db
def test_revoking_a_revoked_key_again_keeps_the_first_revocation_time() -> None:
    tenant = tenant_create(slug="acme")
    plaintext, api_key = api_key_issue(tenant=tenant)
    run("key_revoke", plaintext[:12])
    api_key.refresh_from_db()
    first = api_key.revoked_at

    run("key_revoke", plaintext[:12])

    api_key.refresh_from_db()
    assert api_key.revoked_at == first


@pytest.mark.django_db
def test_key_revoke_refuses_an_unknown_prefix() -> None:
    with pytest.raises(CommandError, match=r"^0 keys have the prefix 'sk-gw-nosuch'; revoke it in admin instead$"):
        run("key_revoke", "sk-gw-nosuch")


@pytest.mark.django_db
def test_key_revoke_refuses_a_prefix_shared_by_two_keys_and_revokes_neither() -> None:
    tenant = tenant_create(slug="acme")
    for digest in ("a" * 64, "b" * 64):
        ApiKey.objects.create(tenant=tenant, prefix="sk-gw-shared", digest=digest)

    with pytest.raises(CommandError, match=r"^2 keys have the prefix 'sk-gw-shared'"):
        run("key_revoke", "sk-gw-shared")

    assert ApiKey.objects.filter(prefix="sk-gw-shared", revoked_at__isnull=True).count() == 2


@pytest.mark.django_db
def test_tenant_create_refuses_a_slug_that_is_not_a_slug() -> None:
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="invalid slug 'Bad Slug!'"):
        call_command("tenant_create", "Bad Slug!", stdout=StringIO())
    assert not Tenant.objects.filter(slug="Bad Slug!").exists()
