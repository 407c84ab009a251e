from django.db import models
from django.utils import timezone


class Tenant(models.Model):
    """A customer of the gateway: owns keys, budgets and usage."""

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200, blank=True)
    is_active = models.BooleanField(default=True)
    is_prepaid = models.BooleanField(
        default=False, help_text="Pays from credit: refused once the credit ledger's balance is used up."
    )
    cache_ttl_seconds = models.PositiveIntegerField(
        null=True, blank=True, help_text="Serve repeated requests from the response cache for this long. Empty: off."
    )
    rpm_limit = models.PositiveIntegerField(null=True, blank=True, help_text="Requests per minute. Empty: no limit.")
    tpm_limit = models.PositiveIntegerField(null=True, blank=True, help_text="Tokens per minute. Empty: no limit.")
    max_parallel = models.PositiveIntegerField(null=True, blank=True, help_text="Requests in flight at once.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class ApiKeyQuerySet(models.QuerySet["ApiKey"]):
    def for_digest(self, digest: str) -> "ApiKeyQuerySet":
        """The one lookup the request path needs (unique index on digest)."""
        return self.filter(digest=digest).select_related("tenant")

    def live(self) -> "ApiKeyQuerySet":
        return self.filter(revoked_at__isnull=True)


class ApiKey(models.Model):
    """A virtual key. The plaintext is never stored, only its HMAC digest."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=200, blank=True)
    prefix = models.CharField(max_length=16, editable=False, help_text="First characters of the key, for display.")
    digest = models.CharField(max_length=64, unique=True, editable=False)
    allowed_models = models.JSONField(
        null=True, blank=True, help_text='Model names or patterns such as "openai/*"; empty means every model.'
    )
    tags = models.JSONField(default=list, blank=True, help_text="Labels for cost attribution.")
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    cache_ttl_seconds = models.PositiveIntegerField(
        null=True, blank=True, help_text="Response cache lifetime for this key; 0 turns it off. Empty: the tenant's."
    )
    rpm_limit = models.PositiveIntegerField(null=True, blank=True, help_text="Requests per minute. Empty: no limit.")
    tpm_limit = models.PositiveIntegerField(null=True, blank=True, help_text="Tokens per minute. Empty: no limit.")
    max_parallel = models.PositiveIntegerField(null=True, blank=True, help_text="Requests in flight at once.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name or 'unnamed'})"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None


class ConfigVersion(models.Model):
    """A single counter bumped on every change to what the request path caches.

    Each process polls this one row (by primary key, off the request path)
    and drops its snapshots of keys, tenants, routes and prices when the
    number moves, so an edit made in any process reaches all within seconds.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    version = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"config version {self.version}"
