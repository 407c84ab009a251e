"""Tokens for the management API: issued to a staff user, stored as digests."""

import secrets

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from accounts.keys import key_digest
from accounts.models import StaffToken

TOKEN_PREFIX = "sk-gws-"
DISPLAY_CHARS = 13  # "sk-gws-" plus six random characters


@transaction.atomic
def staff_token_issue(*, user: AbstractBaseUser, name: str = "") -> tuple[str, StaffToken]:
    """Create a token for `user` and return its plaintext, which is never retrievable again."""
    if not (user.is_active and getattr(user, "is_staff", False)):
        raise ValueError(f"{user} is not active staff")
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = StaffToken.objects.create(
        user_id=user.pk, name=name, prefix=plaintext[:DISPLAY_CHARS], digest=key_digest(plaintext)
    )
    return plaintext, token


def staff_token_revoke(*, token: StaffToken) -> StaffToken:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
    return token


def staff_token_lookup(plaintext: str) -> StaffToken | None:
    """The live token with this plaintext, if its user is still active staff."""
    if not plaintext.startswith(TOKEN_PREFIX):
        return None  # a virtual key or garbage: no query
    token = StaffToken.objects.live().select_related("user").filter(digest=key_digest(plaintext)).first()
    if token is None or not (token.user.is_active and token.user.is_staff):
        return None
    return token
