"""Virtual key material: generation, digest, display prefix. No ORM here.

A key is shown once. The database keeps only HMAC-SHA256(pepper, key) and a
short prefix that lets people tell their keys apart in lists and logs.
"""

import hmac
import secrets

from django.conf import settings

KEY_PREFIX = "sk-gw-"
DISPLAY_CHARS = 12  # "sk-gw-" plus six random characters


def key_generate() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_digest(plaintext: str) -> str:
    pepper = settings.ACCOUNTS_KEY_PEPPER.encode()
    return hmac.new(pepper, plaintext.encode("utf-8", "surrogatepass"), "sha256").hexdigest()


def key_display_prefix(plaintext: str) -> str:
    return plaintext[:DISPLAY_CHARS]
