import os

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

from proxy.presets import PRESETS
from proxy.secrets import secret_decrypt, secret_encrypt


class Provider(models.Model):
    """An upstream API: where to send requests and with which credential."""

    # One per preset (proxy.presets): the protocol and its defaults.
    # django-stubs types only the str constructor of TextChoices, not the enum functional API.
    Kind = models.TextChoices("Kind", [(p.name.upper().replace("-", "_"), (p.name, p.label)) for p in PRESETS])  # type: ignore[call-overload]

    name = models.SlugField(max_length=64, unique=True)
    kind = models.CharField(max_length=32, choices=Kind.choices, default=Kind.OPENAI)
    base_url = models.URLField(max_length=500, help_text="For example https://api.openai.com/v1")
    api_key_env = models.CharField(
        max_length=100, blank=True, help_text="Name of the environment variable that holds the credential."
    )
    # Fernet token; the plaintext is never stored or shown back.
    api_key_encrypted = models.TextField(blank=True, editable=False)
    # Seconds; empty: the PROXY_*_TIMEOUT setting. There is no total limit:
    # a stream that keeps moving may run as long as it needs.
    connect_timeout = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0.001)], help_text="Seconds to connect."
    )
    first_byte_timeout = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0.001)], help_text="Seconds to the response headers."
    )
    idle_timeout = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0.001)], help_text="Longest silence between two chunks."
    )
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


def fallbacks_validate(value: object) -> None:
    if not isinstance(value, list) or not all(isinstance(name, str) and name for name in value):
        raise ValidationError("Fallbacks are a list of route names.")


class Route(models.Model):
    """A public model name and the deployments that serve it.

    A name ending in `*` is a wildcard: `openai/*` sends `openai/gpt-4o` to
    a deployment as `gpt-4o` (or as its `upstream_model` + `gpt-4o` when set).
    """

    model = models.CharField(max_length=200, unique=True)
    # Other routes to try, in order, when every deployment of this one failed.
    # Cycles are ignored when the catalog loads (with a log line).
    fallbacks = models.JSONField(default=list, blank=True, validators=[fallbacks_validate])
    # What the model is good at, for smart routers' designators (filled by
    # descriptions_sync when empty).
    description = models.TextField(blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model"]

    def __str__(self) -> str:
        return self.model

    @property
    def is_wildcard(self) -> bool:
        return self.model.endswith("*")

    def clean(self) -> None:
        if self.model in (self.fallbacks or []):
            raise ValidationError({"fallbacks": "A route cannot fall back to itself."})


class Deployment(models.Model):
    """One provider (and upstream model) that serves a route.

    Requests go to the active deployments of the best (lowest) priority,
    chosen at random in proportion to their weights; the next priority only
    serves when every deployment of the better one is unhealthy or failed.
    """

    route = models.ForeignKey(Route, on_delete=models.CASCADE, related_name="deployments")
    provider = models.ForeignKey(Provider, on_delete=models.PROTECT, related_name="deployments")
    upstream_model = models.CharField(
        max_length=200, blank=True, help_text="Empty: the route's name (for a wildcard, the rest of the name)."
    )
    weight = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1)])
    priority = models.SmallIntegerField(default=0, help_text="Lower is preferred.")
    # What the provider allows this deployment; the gateway never sends more
    # (proxy.capacity), and lowers it for a while after an upstream 429.
    rpm = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Requests per minute the provider allows this deployment; empty: no limit.",
    )
    tpm = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Tokens per minute (input and output) the provider allows this deployment; empty: no limit.",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["route", "priority", "id"]
        constraints = [
            models.UniqueConstraint(fields=["route", "provider", "upstream_model"], name="proxy_deployment_unique")
        ]

    def __str__(self) -> str:
        return f"{self.route.model} → {self.provider.name}" + (
            f" ({self.upstream_model})" if self.upstream_model else ""
        )


def is_alias_pattern(pattern: str) -> bool:
    """A shell pattern (`claude-*-opus-*`) rather than an exact alias (`big`)."""
    return any(char in pattern for char in "*?[")


class ModelAlias(models.Model):
    """Another name for a route: `big` -> `gpt-4o`, or every name a pattern
    matches (`claude-*-opus-*`) -> `big-route`. Exact routes win over aliases;
    aliases win over wildcard routes. An alias never points at another alias."""

    pattern = models.CharField(
        max_length=200, unique=True, help_text="An exact name, or a shell pattern with *, ? or [...]."
    )
    target_model = models.CharField(max_length=200, help_text="The route that serves it (a concrete route name).")
    priority = models.SmallIntegerField(
        default=0, help_text="Among patterns matching one name, lower wins (then the longer pattern)."
    )
    is_active = models.BooleanField(default=True)
    note = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["priority", "pattern"]
        verbose_name_plural = "model aliases"

    def __str__(self) -> str:
        return f"{self.pattern} → {self.target_model}"

    @property
    def is_pattern(self) -> bool:
        return is_alias_pattern(self.pattern)


def candidates_validate(value: object) -> None:
    if not isinstance(value, list) or not value or not all(isinstance(name, str) and name for name in value):
        raise ValidationError("Candidates are a non-empty list of model names.")


class Router(models.Model):
    """A smart router: a client asks for `name` (say `auto`) and is answered
    by the candidate that the designator model picks for its query. The name
    is unique among route and alias names; routers, like routes and aliases,
    serve every tenant."""

    name = models.CharField(max_length=200, unique=True, help_text="The model name clients ask for.")
    designator = models.CharField(max_length=200, help_text="The model that picks a candidate for each query.")
    candidates = models.JSONField(
        default=list, validators=[candidates_validate], help_text="Model names the designator chooses from, in order."
    )
    purpose = models.TextField(blank=True, help_text="What the router is for, told to the designator.")
    fallback = models.CharField(
        max_length=200, blank=True, help_text="The candidate used when the designator fails; empty: the first."
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} → {', '.join(self.candidates or [])}"

    def clean(self) -> None:
        if self.fallback and self.fallback not in (self.candidates or []):
            raise ValidationError({"fallback": "The fallback must be one of the candidates."})


class Augmentor(models.Model):
    """A model name (say `researcher`) whose requests are augmented: its
    designator decides whether the query needs a web search, pages scraped,
    both or nothing, and what was found is added to the prompt before the
    target model answers (proxy.augment). Like routers, it serves every
    tenant; its name is unique among route, alias and router names."""

    class SearchProvider(models.TextChoices):
        SEARXNG = "searxng", "SearXNG (AUGMENT_SEARXNG_URL)"
        PERPLEXITY = "perplexity", "Perplexity (PERPLEXITY_API_KEY)"

    name = models.CharField(max_length=200, unique=True, help_text="The model name clients ask for.")
    designator = models.CharField(max_length=200, help_text="The model that decides whether to search or scrape.")
    target = models.CharField(max_length=200, help_text="The model that answers, with what was found.")
    search_provider = models.CharField(max_length=16, choices=SearchProvider.choices, default=SearchProvider.SEARXNG)
    max_search_results = models.PositiveSmallIntegerField(
        default=5, validators=[MinValueValidator(1)], help_text="Search results added to the prompt, at most."
    )
    max_scrape_urls = models.PositiveSmallIntegerField(
        default=3, validators=[MinValueValidator(1)], help_text="Pages scraped for one request, at most."
    )
    max_context_tokens = models.PositiveIntegerField(
        default=2000, validators=[MinValueValidator(1)], help_text="What is added to the prompt, at most."
    )
    purpose = models.TextField(blank=True, help_text="What the augmentor is for, told to the designator.")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} → {self.target} ({self.search_provider})"


class StoredResponseQuerySet(models.QuerySet["StoredResponse"]):
    def for_tenant(self, tenant_id: int) -> "StoredResponseQuerySet":
        """A tenant's responses that have not expired (the retention task
        deletes the others, which are gone to readers already)."""
        return self.filter(tenant_id=tenant_id, expires_at__gt=timezone.now())


class StoredResponse(models.Model):
    """A Responses API answer the gateway translated (from a provider without
    the Responses API) and keeps for `previous_response_id`, GET and DELETE.

    `input_items` is the whole conversation the answer was made from (the
    earlier turns' items followed by this request's own), so the next turn
    is one read however long the chain: its history is these items plus
    `response["output"]`.
    """

    response_id = models.CharField(max_length=100, unique=True)  # as the client saw it
    tenant = models.ForeignKey("accounts.Tenant", on_delete=models.CASCADE, related_name="stored_responses")
    api_key = models.ForeignKey(
        "accounts.ApiKey", null=True, on_delete=models.SET_NULL, related_name="stored_responses"
    )
    model = models.CharField(max_length=200)  # the public name the client asked for
    previous_response_id = models.CharField(max_length=100, blank=True)
    input_items = models.JSONField(default=list)
    response = models.JSONField()  # the whole `response` object, output included
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True)

    objects = StoredResponseQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.response_id


class Guardrail(models.Model):
    """What to look for in requests (input) or answers (output), and what to
    do on a match: refuse the request, redact the match, or only record it.
    Applies to the tenants and keys it is attached to (proxy.guardrails)."""

    class Kind(models.TextChoices):
        SECRETS = "secrets", "Secrets (cloud and API keys, private keys)"
        PII = "pii", "Personal data (e-mail, phone, cards, IBAN, national ids)"
        REGEX = "regex", "Regular expression"

    class Action(models.TextChoices):
        BLOCK = "block", "Block (400 guardrail_blocked)"
        REDACT = "redact", "Redact ([REDACTED:TYPE])"
        FLAG = "flag", "Flag (record only)"

    class Stage(models.TextChoices):
        INPUT = "input", "Input (before the provider)"
        OUTPUT = "output", "Output (the answer, streams included)"

    name = models.SlugField(max_length=64, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    pattern = models.TextField(blank=True, help_text="The regular expression (Python syntax) of a regex guardrail.")
    action = models.CharField(max_length=16, choices=Action.choices)
    stage = models.CharField(max_length=16, choices=Stage.choices)
    enabled = models.BooleanField(default=True)
    tenants = models.ManyToManyField("accounts.Tenant", blank=True, related_name="guardrails")
    api_keys = models.ManyToManyField("accounts.ApiKey", blank=True, related_name="guardrails")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind}: {self.action} {self.stage})"

    def clean(self) -> None:
        from proxy.guardrails.regex import pattern_error

        if self.kind == self.Kind.REGEX:
            error = pattern_error(self.pattern)
            if error is not None:
                raise ValidationError({"pattern": error})
        elif self.pattern:
            raise ValidationError({"pattern": "Only a regex guardrail has a pattern."})
