"""Secrets at rest (provider credentials, webhook signing secrets): Fernet
(AES-128-CBC + HMAC) with a key from settings. cryptography's Fernet is a
vetted construction; a hand-rolled AES mode would not be. In the kernel so
that every app can store a secret without importing the one above it."""

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings


class SecretError(Exception):
    """A stored secret cannot be read with the configured key (retry won't help)."""


def _fernet() -> Fernet:
    key = settings.PROXY_SECRETS_KEY
    if not key:
        # Derived, so a first run works with SECRET_KEY alone; set
        # PROXY_SECRETS_KEY so that SECRET_KEY can rotate independently.
        digest = hashlib.sha256(b"proxy-secrets:" + settings.SECRET_KEY.encode()).digest()
        key = base64.urlsafe_b64encode(digest).decode()
    return Fernet(key)


def secret_encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def secret_decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise SecretError("a stored secret cannot be decrypted with PROXY_SECRETS_KEY") from exc
