"""Key material: how keys look, how they are digested, and that only the digest is kept."""

import hashlib
import hmac
import re

import pytest
from django.db import connection

from accounts.keys import KEY_PREFIX, key_digest, key_display_prefix, key_generate
from accounts.models import ApiKey
from accounts.services import api_key_issue, tenant_create

# "sk-gw-" then secrets.token_urlsafe(32): 32 random bytes -> 43 url-safe base64 characters.
KEY_FORMAT = re.compile(r"^sk-gw-[A-Za-z0-9_-]{43}$")


def test_a_generated_key_starts_with_sk_gw_and_carries_43_url_safe_characters() -> None:
    plaintext = key_generate()

    assert KEY_PREFIX == "sk-gw-"
    assert KEY_FORMAT.match(plaintext), plaintext
    assert len(plaintext) == 49


def test_a_thousand_generated_keys_are_all_different() -> None:
    keys = {key_generate() for _ in range(1000)}

    assert len(keys) == 1000
    # Not merely different at the end: the displayed prefixes differ too (6 random characters).
    assert len({key_display_prefix(k) for k in keys}) > 990


def test_the_digest_is_hmac_sha256_of_the_key_under_the_pepper(settings) -> None:
    settings.ACCOUNTS_KEY_PEPPER = "test-pepper"

    digest = key_digest("sk-gw-example-key")

    # Pinned value: HMAC-SHA256(key=b"test-pepper", msg=b"sk-gw-example-key").hexdigest()
    assert digest == "224f4257518ce8137cce8f50cb795e361ff7b721cc6328755fed660b5f205a0e"
    assert digest == hmac.new(b"test-pepper", b"sk-gw-example-key", hashlib.sha256).hexdigest()
    assert digest != hashlib.sha256(b"sk-gw-example-key").hexdigest()  # a plain hash would be unpeppered


def test_changing_the_pepper_changes_every_digest(settings) -> None:
    settings.ACCOUNTS_KEY_PEPPER = "test-pepper"
    first = key_digest("sk-gw-example-key")
    settings.ACCOUNTS_KEY_PEPPER = "other-pepper"
    second = key_digest("sk-gw-example-key")

    assert second == "f015eec9be3702ccb5cd2836026134d41f1f39b1c786bb9a323641a9ce0f722c"
    assert first != second


def test_the_digest_is_stable_and_distinguishes_keys_that_differ_in_one_character() -> None:
    plaintext = key_generate()
    neighbour = plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")

    assert key_digest(plaintext) == key_digest(plaintext)
    assert re.fullmatch(r"[0-9a-f]{64}", key_digest(plaintext))
    assert key_digest(neighbour) != key_digest(plaintext)


def test_the_display_prefix_is_sk_gw_and_the_next_six_characters() -> None:
    assert key_display_prefix("sk-gw-abcdefghijklmnop") == "sk-gw-abcdef"

    plaintext = key_generate()
    assert key_display_prefix(plaintext) == plaintext[:12]
    assert len(key_display_prefix(plaintext)) == 12


@pytest.mark.django_db
def test_an_issued_key_is_stored_as_its_digest_and_prefix_only() -> None:
    tenant = tenant_create(slug="acme")
    plaintext, api_key = api_key_issue(tenant=tenant, name="ci", allowed_models=["gpt-test"], tags=["team-a"])

    api_key.refresh_from_db()
    assert KEY_FORMAT.match(plaintext)
    assert api_key.digest == key_digest(plaintext)
    assert api_key.prefix == plaintext[:12]
    assert ApiKey.objects.live().for_digest(key_digest(plaintext)).get() == api_key

    # No field holds the plaintext, nor contains it.
    for field in ApiKey._meta.concrete_fields:
        value = field.value_from_object(api_key)
        assert value != plaintext, field.name
        assert plaintext not in str(value), field.name

    # Nor does any column of the raw row (the ORM could hide a transformed field).
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {ApiKey._meta.db_table} WHERE id = %s", [api_key.pk])
        row = cursor.fetchone()
    assert row is not None
    assert all(plaintext not in str(column) for column in row)


@pytest.mark.django_db
def test_two_keys_issued_for_one_tenant_have_different_digests() -> None:
    tenant = tenant_create(slug="acme")
    first, first_key = api_key_issue(tenant=tenant)
    second, second_key = api_key_issue(tenant=tenant)

    assert first != second
    assert first_key.digest != second_key.digest
    assert ApiKey.objects.filter(tenant=tenant).count() == 2
