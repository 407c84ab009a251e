import os

from django.db import models
from django.utils import timezone

from proxy.secrets import secret_decrypt, secret_encrypt


class Provider(models.Model):
    """An upstream API: where to send requests and with which credential."""

    class Kind(models.TextChoices):
        OPENAI = "openai", "OpenAI-compatible"

    name = models.SlugField(max_length=64, unique=True)
    kind = models.CharField(max_length=32, choices=Kind.choices, default=Kind.OPENAI)
    base_url = models.URLField(max_length=500, help_text="For example https://api.openai.com/v1")
    api_key_env = models.CharField(
        max_length=100, blank=True, help_text="Name of the environment variable that holds the credential."
    )
    # Fernet token; the plaintext is never stored or shown back.
    api_key_encrypted = models.TextField(blank=True, editable=False)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def set_api_key(self, plaintext: str) -> None:
        self.api_key_encrypted = secret_encrypt(plaintext) if plaintext else ""

    @property
    def has_stored_key(self) -> bool:
        return bool(self.api_key_encrypted)

    def resolve_api_key(self) -> str:
        """The credential to send upstream ("" when the provider needs none)."""
        if self.api_key_env:
            return os.environ.get(self.api_key_env, "")
        return secret_decrypt(self.api_key_encrypted) if self.api_key_encrypted else ""


class Route(models.Model):
    """A public model name and where it goes.

    A name ending in `*` is a wildcard: `openai/*` sends `openai/gpt-4o` to
    the provider as `gpt-4o` (or as `upstream_model` + `gpt-4o` when set).
    """

    model = models.CharField(max_length=200, unique=True)
    provider = models.ForeignKey(Provider, on_delete=models.PROTECT, related_name="routes")
    upstream_model = models.CharField(max_length=200, blank=True, help_text="Empty: the name the client asked for.")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model"]

    def __str__(self) -> str:
        return f"{self.model} → {self.provider.name}"

    @property
    def is_wildcard(self) -> bool:
        return self.model.endswith("*")
