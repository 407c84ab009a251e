from decimal import Decimal

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

_RATE_BOUNDS = [MinValueValidator(Decimal(0)), MaxValueValidator(Decimal(1))]


class SemanticScope(models.TextChoices):
    """What the semantic cache compares: the question just asked, or the whole conversation."""

    LAST_USER_MESSAGE = "last_user_message", "the last user message"
    CONVERSATION = "conversation", "the whole conversation"


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
    trace_sample_rate = models.DecimalField(
        max_digits=5,
        decimal_places=4,
        default=Decimal(0),
        validators=_RATE_BOUNDS,
        help_text="Share of requests (0 to 1) whose bodies are captured for debugging (proxy.tracing). 0: off.",
    )
    # The semantic cache (cachestore.semantic_index), beside the exact one: on
    # once a threshold is set, for keys that have a cache lifetime.
    semantic_threshold = models.DecimalField(
        max_digits=4,
        decimal_places=3,
        null=True,
        blank=True,
        validators=_RATE_BOUNDS,
        help_text="Serve an earlier answer to a question at least this similar (cosine, 0 to 1). Empty: off.",
    )
    semantic_scope = models.CharField(
        max_length=20, choices=SemanticScope.choices, default=SemanticScope.LAST_USER_MESSAGE
    )
    semantic_include_system = models.BooleanField(
        default=True, help_text="Match only answers given under the same system prompt. Off: it is ignored."
    )
    semantic_min_answer_tokens = models.PositiveIntegerField(
        null=True, blank=True, help_text="Shorter answers are not offered to similar questions. Empty: no minimum."
    )
    semantic_max_answer_tokens = models.PositiveIntegerField(
        null=True, blank=True, help_text="Longer answers are not offered to similar questions. Empty: no maximum."
    )
    semantic_ttl_seconds = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="How long an answer is offered to similar questions (at most the cache lifetime). Empty: that.",
    )
    semantic_embedding_model = models.CharField(
        max_length=200,
        blank=True,
        help_text="The embeddings model (a route) that embeds questions. Empty: CACHESTORE_SEMANTIC_EMBEDDING_MODEL.",
    )
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
    trace_sample_rate = models.DecimalField(
        max_digits=5,
        decimal_places=4,
        null=True,
        blank=True,
        validators=_RATE_BOUNDS,
        help_text="Share of this key's requests (0 to 1) captured for debugging; 0 turns it off. Empty: the tenant's.",
    )
    # The semantic cache's settings for this key; empty: the tenant's.
    semantic_threshold = models.DecimalField(
        max_digits=4,
        decimal_places=3,
        null=True,
        blank=True,
        validators=_RATE_BOUNDS,
        help_text="Serve an earlier answer to a question at least this similar (0 to 1). Empty: the tenant's.",
    )
    semantic_scope = models.CharField(max_length=20, choices=SemanticScope.choices, blank=True)
    semantic_include_system = models.BooleanField(null=True, blank=True)
    semantic_min_answer_tokens = models.PositiveIntegerField(null=True, blank=True)
    semantic_max_answer_tokens = models.PositiveIntegerField(null=True, blank=True)
    semantic_ttl_seconds = models.PositiveIntegerField(null=True, blank=True)
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


class StaffTokenQuerySet(models.QuerySet["StaffToken"]):
    def live(self) -> "StaffTokenQuerySet":
        return self.filter(revoked_at__isnull=True)


class StaffToken(models.Model):
    """A staff member's token for the management API (`Authorization: Bearer`).

    Stored as an HMAC digest like virtual keys; the plaintext is shown once.
    It acts as its user, and only while that user is active staff.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="staff_tokens")
    name = models.CharField(max_length=200, blank=True)
    prefix = models.CharField(max_length=16, editable=False, help_text="First characters of the token, for display.")
    digest = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = StaffTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name or 'unnamed'})"


class AuditEntry(models.Model):
    """One write that changes money, access or routing (API, admin or command): who, what, on which object.

    `actor` keeps who it was as text, so the entry outlives the user's
    account. `changes` never holds secrets (accounts.audit scrubs them).
    """

    at = models.DateTimeField(default=timezone.now, editable=False, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor = models.CharField(max_length=200)
    action = models.CharField(max_length=64, help_text='For example "tenant.create" or "key.revoke".')
    object_type = models.CharField(max_length=64, help_text='The model, as "app_label.model".')
    object_id = models.CharField(max_length=64)
    object_repr = models.CharField(max_length=200, blank=True)
    changes = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    request_id = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["object_type", "object_id"])]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.object_type}#{self.object_id}"


class RequestTrace(models.Model):
    """One traced request's bodies, for debugging (TRACE_SINK=db; proxy.tracing).

    Written off the request path by the trace writer, secrets already
    redacted; pruned after TRACE_RETENTION_DAYS. Ids, not foreign keys: a
    trace must not stop a tenant or key from being deleted, nor cost a join.
    """

    request_id = models.CharField(max_length=64, db_index=True, help_text="As in x-request-id and the usage record.")
    tenant_id = models.BigIntegerField(db_index=True)
    key_id = models.BigIntegerField()
    key_prefix = models.CharField(max_length=16)
    model = models.CharField(max_length=200)
    endpoint = models.CharField(max_length=64)
    status = models.PositiveSmallIntegerField()
    error_code = models.CharField(max_length=64, blank=True)
    stream = models.BooleanField(default=False)
    started_at = models.DateTimeField(db_index=True)
    finished_at = models.DateTimeField()
    latency_ms = models.PositiveIntegerField()
    request = models.JSONField(null=True, help_text="The request body (parsed JSON, or text when cut short).")
    response = models.JSONField(null=True, help_text="The answer's JSON, or a stream's events as they were sent.")
    truncated = models.BooleanField(default=False, help_text="A body passed TRACE_MAX_BODY_BYTES and was cut short.")
    attempts = models.JSONField(default=list, blank=True, help_text="Earlier attempts that failed and were retried.")
    augmentation = models.JSONField(
        default=list,
        blank=True,
        help_text="An augmentor's steps: the designator's decision, each search and scrape, the text added.",
    )

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.request_id} {self.model} {self.status}"
