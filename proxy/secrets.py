"""Provider credentials at rest: the kernel's Fernet helpers (gateway.kernel.secrets),
under the names proxy has always used."""

from gateway.kernel.secrets import SecretError, secret_decrypt, secret_encrypt

__all__ = ["SecretError", "secret_decrypt", "secret_encrypt"]
