"""The plain values the request path works on.

Snapshots (accounts.snapshots, proxy.catalog) build these from the database
once; the hot path only reads them. Frozen, so a request can never change
what another request sees.
"""

import datetime as dt
import fnmatch
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class BudgetRule:
    id: int
    period: str  # day, week, month or total
    limit_nanos: int


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Per minute and in flight; None: no limit."""

    rpm: int | None = None
    tpm: int | None = None
    parallel: int | None = None

    def __bool__(self) -> bool:
        return self.rpm is not None or self.tpm is not None or self.parallel is not None


@dataclass(frozen=True, slots=True)
class SemanticCacheSettings:
    """The semantic cache of a key (its own settings over its tenant's).

    `threshold` is a cosine similarity, only ever compared with one: a float."""

    threshold: float
    scope: str = "last_user_message"  # or "conversation"
    include_system: bool = True  # only answers given under the same system prompt match
    min_answer_tokens: int | None = None
    max_answer_tokens: int | None = None
    ttl_seconds: int | None = None  # None: as long as the exact cache keeps the answer
    embedding_model: str = ""  # "": the CACHESTORE_SEMANTIC_EMBEDDING_MODEL setting


@dataclass(frozen=True, slots=True)
class TenantContext:
    """Who is calling: a live (not revoked) key and its tenant."""

    tenant_id: int
    tenant_slug: str
    tenant_active: bool
    key_id: int
    key_prefix: str
    # None: every model the gateway routes. Otherwise exact names or
    # shell-style patterns such as "openai/*".
    allowed_models: tuple[str, ...] | None = None
    expires_at: dt.datetime | None = None
    tags: tuple[str, ...] = ()
    # Budgets of the tenant and of the key, and what the database had
    # recorded against them when this snapshot loaded: {(budget id,
    # period start): spent nanos}. The spend guard takes it from there.
    budgets: tuple[BudgetRule, ...] = ()
    budget_spent: dict[tuple[int, dt.datetime], int] = field(default_factory=dict, compare=False)
    prepaid: bool = False
    credit_in_nanos: int = 0  # top-ups, refunds and adjustments
    credit_used_nanos: int = 0  # usage charged so far
    cache_ttl_seconds: int = 0  # the response cache's lifetime for this key; 0: off
    key_limits: RateLimits = RateLimits()
    tenant_limits: RateLimits = RateLimits()
    # Share of requests whose bodies proxy.tracing captures (0: off, the
    # default; the request path then pays one attribute check).
    trace_sample_rate: float = 0.0
    semantic: SemanticCacheSettings | None = None  # None: the semantic cache is off

    def allows(self, model: str) -> bool:
        if self.allowed_models is None:
            return True
        return any(model == p or fnmatch.fnmatchcase(model, p) for p in self.allowed_models)

    def is_expired(self, now: dt.datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at


@dataclass(frozen=True, slots=True)
class Rates:
    """Integer nano-dollars per million tokens, one per token bucket.

    The audio rates are None when the price has none: audio is then charged
    at the text rate it refines (input, output)."""

    input: int
    cached_input: int
    cache_write_5m: int
    cache_write_1h: int
    output: int
    reasoning: int
    audio_input: int | None = None
    audio_output: int | None = None
    image_input: int | None = None  # image tokens (gpt-image-1); None: the input rate
    image_output: int | None = None  # None: the output rate


@dataclass(frozen=True, slots=True)
class MediaRates:
    """Integer nano-dollars per unit of what the media endpoints meter
    (LiteLLM's input_cost_per_second, input_cost_per_character,
    output_cost_per_image); None: the price has no such rate."""

    per_second: int | None = None  # of audio input (transcriptions, translations)
    per_character: int | None = None  # of speech input
    per_image: int | None = None  # one image generated at this price's size and quality

    def __bool__(self) -> bool:
        return self.per_second is not None or self.per_character is not None or self.per_image is not None


@dataclass(frozen=True, slots=True)
class PriceSnapshot:
    """A price row made ready for arithmetic: every fallback resolved."""

    base: Rates
    long: Rates | None = None  # applies to the whole request above the threshold
    long_context_threshold: int | None = None
    request_fee_nanos: int = 0
    max_output_tokens: int | None = None
    price_id: int | None = None
    media: MediaRates = MediaRates()
    # The model's prices for one image size and quality ("hd/1024x1024",
    # "1024x1024"), from LiteLLM's size/quality-named rows
    # ("hd/1024-x-1024/dall-e-3"): billing.media_pricing.image_price.
    image_variants: tuple[tuple[str, "PriceSnapshot"], ...] = ()

    def rates_for(self, prompt_tokens: int) -> Rates:
        if (
            self.long is not None
            and self.long_context_threshold is not None
            and prompt_tokens > self.long_context_threshold
        ):
            return self.long
        return self.base


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    name: str
    kind: str
    base_url: str
    api_key: str = field(default="", repr=False)  # resolved secret: never printed
    # Seconds, resolved against the PROXY_*_TIMEOUT settings by the catalog
    # (these defaults are the settings' own, for values built in tests).
    connect_timeout: float = 10.0
    first_byte_timeout: float = 300.0  # to the response headers
    idle_timeout: float = 300.0  # longest silence between two chunks


@dataclass(frozen=True, slots=True)
class RouteTarget:
    """Where a public model name goes: one deployment of its route."""

    public_model: str
    provider: ProviderConfig
    upstream_model: str
    price: PriceSnapshot | None
    deployment_id: int | None = None  # None: not from the database (no breaker)
    weight: int = 1
    priority: int = 0  # lower is preferred
    # What the provider allows this deployment per minute (None: no limit);
    # the gateway never sends more (proxy.capacity).
    rpm: int | None = None
    tpm: int | None = None


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """Every way to serve a public model name: its deployments (any order;
    `routing.choose` picks) and, when all fail, other routes to try in order
    (already flattened: a fallback's own fallbacks follow it, no cycles)."""

    public_model: str
    deployments: tuple[RouteTarget, ...]
    fallbacks: tuple[str, ...] = ()


def caller(request: Any) -> "TenantContext":
    """The calling key's tenant context, which the API's key authentication
    (accounts.auth) set on `request.auth`. Django's HttpRequest declares no
    such attribute, so it is read here, once, instead of under a type
    checker's exemption in every view."""
    ctx: TenantContext = request.auth
    return ctx


CHARS_PER_TOKEN = 4  # the usual rule of thumb for English text and code


def estimate_tokens(chars: int) -> int:
    """Tokens for `chars` characters, where no tokenizer counted them (rounded up)."""
    return -(-chars // CHARS_PER_TOKEN)


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts in disjoint buckets: each token is counted exactly once.

    `input_tokens` excludes cache reads, cache writes, audio and images,
    `output_tokens` excludes reasoning, audio and images, whatever convention
    the provider reported them in (audio: the realtime API's and
    gpt-4o-transcribe's audio tokens; images: gpt-image-1's image tokens).
    """

    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    audio_input_tokens: int = 0  # uncached audio input (cached audio is in cached_input_tokens)
    audio_output_tokens: int = 0
    image_input_tokens: int = 0  # images sent to gpt-image-1 (edits), out of input_tokens
    image_output_tokens: int = 0  # images gpt-image-1 generated, out of output_tokens
    # What the media endpoints meter besides tokens: audio input in
    # milliseconds (priced per second), speech input in characters, images made.
    audio_input_ms: int = 0
    input_characters: int = 0
    output_images: int = 0

    @property
    def prompt_tokens(self) -> int:
        return (
            self.input_tokens
            + self.cached_input_tokens
            + self.cache_write_5m_tokens
            + self.cache_write_1h_tokens
            + self.audio_input_tokens
            + self.image_input_tokens
        )

    @property
    def total_tokens(self) -> int:
        return (
            self.prompt_tokens
            + self.output_tokens
            + self.reasoning_tokens
            + self.audio_output_tokens
            + self.image_output_tokens
        )


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """One request that reached an upstream, as the ledger records it."""

    request_id: str
    created_at: dt.datetime
    tenant_id: int
    key_id: int
    endpoint: str
    public_model: str
    upstream_model: str
    provider: str
    status_code: int
    usage: Usage
    cost_nanos: int
    latency_ms: int
    stream: bool
    error_code: str = ""
    usage_estimated: bool = False
    client_disconnected: bool = False
    ttft_ms: int | None = None
    price_id: int | None = None
    cache_hit: bool = False
    cache_status: str = ""  # hit, miss or bypass when the cache was asked
    saved_nanos: int = 0
    # Why the gateway made this call itself (routing, augmentation...); empty
    # for a client's own request.
    purpose: str = ""
    guardrails: str = ""  # the verdicts, e.g. "pii:redact:2", never the matched text


# Where the cache lane leaves a request it prepared (proxy.pipeline.Prepared)
# in the ASGI scope, for the view and the authentication step to take.
PREPARED_SCOPE_KEY = "gateway.prepared"
