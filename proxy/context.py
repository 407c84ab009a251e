"""The plain values the request path works on.

Snapshots (accounts.snapshots, proxy.catalog) build these from the database
once; the hot path only reads them. Frozen, so a request can never change
what another request sees.
"""

import datetime as dt
import fnmatch
from dataclasses import dataclass, field


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

    def allows(self, model: str) -> bool:
        if self.allowed_models is None:
            return True
        return any(model == p or fnmatch.fnmatchcase(model, p) for p in self.allowed_models)

    def is_expired(self, now: dt.datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at


@dataclass(frozen=True, slots=True)
class PriceSnapshot:
    """USD per million tokens, held as integer nano-dollars per million tokens."""

    input_nanos_per_mtok: int
    cached_input_nanos_per_mtok: int
    output_nanos_per_mtok: int


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    name: str
    kind: str
    base_url: str
    api_key: str = field(default="", repr=False)  # resolved secret: never printed


@dataclass(frozen=True, slots=True)
class RouteTarget:
    """Where a public model name goes."""

    public_model: str
    provider: ProviderConfig
    upstream_model: str
    price: PriceSnapshot | None


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts in disjoint buckets: each token is counted exactly once.

    `input_tokens` excludes cached input and `output_tokens` excludes
    reasoning, whatever convention the provider reported them in.
    """

    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.cached_input_tokens + self.output_tokens + self.reasoning_tokens


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
