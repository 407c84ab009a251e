"""Request and response bodies of the management API.

Money goes out as strings ("0.150000000"): Decimal USD or nano-dollars
rendered exactly, never floats. Credentials go in and never come out.
"""

import datetime as dt
from decimal import Decimal
from typing import Any

from ninja import Field, Schema

from billing.pricing import usd_string


class ErrorOut(Schema):
    error: dict[str, str]


class Limits(Schema):
    cache_ttl_seconds: int | None = Field(None, ge=0)
    rpm_limit: int | None = Field(None, ge=1)
    tpm_limit: int | None = Field(None, ge=1)
    max_parallel: int | None = Field(None, ge=1)


# --- tenants -------------------------------------------------------------------
class TenantIn(Limits):
    slug: str = Field(..., pattern=r"^[-a-zA-Z0-9_]+$", max_length=64)
    name: str = Field("", max_length=200)
    is_prepaid: bool = False


class TenantPatch(Limits):
    name: str | None = Field(None, max_length=200)
    is_prepaid: bool | None = None
    is_active: bool | None = None


class TenantOut(Limits):
    id: int
    slug: str
    name: str
    is_active: bool
    is_prepaid: bool
    created_at: dt.datetime
    updated_at: dt.datetime


# --- keys ------------------------------------------------------------------------
class KeyIn(Limits):
    tenant_id: int
    name: str = Field("", max_length=200)
    allowed_models: list[str] | None = None
    tags: list[str] = []
    expires_at: dt.datetime | None = None


class KeyOut(Limits):
    id: int
    tenant_id: int
    name: str
    prefix: str
    allowed_models: list[str] | None
    tags: list[str]
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    created_at: dt.datetime


class KeyCreatedOut(KeyOut):
    key: str = Field(..., description="The key itself: shown this once, never retrievable again.")


# --- budgets ---------------------------------------------------------------------
class BudgetIn(Schema):
    tenant_id: int | None = None
    key_id: int | None = None
    period: str = Field(..., description="day, week, month or total")
    limit_usd: Decimal = Field(..., ge=0, decimal_places=9)
    soft_limit_percent: int = Field(80, ge=1, le=100)


class BudgetOut(Schema):
    id: int
    tenant_id: int | None
    key_id: int | None = Field(None, alias="api_key_id")
    period: str
    limit_usd: Decimal
    soft_limit_percent: int
    is_active: bool
    created_at: dt.datetime


# --- providers and routes --------------------------------------------------------
class ProviderIn(Schema):
    name: str = Field(..., pattern=r"^[-a-zA-Z0-9_]+$", max_length=64)
    kind: str = "openai"
    base_url: str = Field(..., max_length=500)
    api_key: str | None = Field(None, description="Stored encrypted; never returned.")
    api_key_env: str | None = Field(None, max_length=100, description="Or: the variable that holds the credential.")


class ProviderPatch(Schema):
    kind: str | None = None
    base_url: str | None = Field(None, max_length=500)
    api_key: str | None = Field(None, description="Stored encrypted; never returned.")
    api_key_env: str | None = Field(None, max_length=100)


class ProviderOut(Schema):
    id: int
    name: str
    kind: str
    base_url: str
    api_key_env: str
    has_stored_key: bool
    is_active: bool
    created_at: dt.datetime


class RouteIn(Schema):
    model: str = Field(..., min_length=1, max_length=200)
    provider: str = Field(..., description="The provider's name.")
    upstream_model: str = Field("", max_length=200)
    rpm: int | None = Field(None, ge=1, description="Requests per minute the provider allows; empty: no limit.")
    tpm: int | None = Field(None, ge=1, description="Tokens per minute the provider allows; empty: no limit.")


class RouteOut(Schema):
    id: int
    model: str
    is_active: bool
    deployments: list[dict[str, Any]]


# --- prices ------------------------------------------------------------------------
class PriceIn(Schema):
    model: str = Field(..., min_length=1, max_length=200)
    provider: str | None = Field(None, description="A provider's name; empty: any provider.")
    input_usd_per_mtok: Decimal = Field(..., ge=0)
    output_usd_per_mtok: Decimal = Field(..., ge=0)
    cached_input_usd_per_mtok: Decimal | None = Field(None, ge=0)
    cache_write_5m_usd_per_mtok: Decimal | None = Field(None, ge=0)
    cache_write_1h_usd_per_mtok: Decimal | None = Field(None, ge=0)
    reasoning_usd_per_mtok: Decimal | None = Field(None, ge=0)
    audio_input_usd_per_mtok: Decimal | None = Field(None, ge=0)
    audio_output_usd_per_mtok: Decimal | None = Field(None, ge=0)
    image_input_usd_per_mtok: Decimal | None = Field(None, ge=0)
    image_output_usd_per_mtok: Decimal | None = Field(None, ge=0)
    # The media endpoints' rates (billing.media_pricing): USD per second of audio, per character, per image.
    input_usd_per_second: Decimal | None = Field(None, ge=0)
    input_usd_per_character: Decimal | None = Field(None, ge=0)
    output_usd_per_image: Decimal | None = Field(None, ge=0)
    long_context_threshold: int | None = Field(None, ge=1)
    long_input_usd_per_mtok: Decimal | None = Field(None, ge=0)
    long_cached_input_usd_per_mtok: Decimal | None = Field(None, ge=0)
    long_cache_write_5m_usd_per_mtok: Decimal | None = Field(None, ge=0)
    long_cache_write_1h_usd_per_mtok: Decimal | None = Field(None, ge=0)
    long_output_usd_per_mtok: Decimal | None = Field(None, ge=0)
    request_fee_usd: Decimal | None = Field(None, ge=0)
    max_output_tokens: int | None = Field(None, ge=1)
    effective_from: dt.datetime | None = None


class PriceOut(Schema):
    id: int
    model: str
    provider: str | None
    input_usd_per_mtok: Decimal
    cached_input_usd_per_mtok: Decimal | None
    cache_write_5m_usd_per_mtok: Decimal | None
    cache_write_1h_usd_per_mtok: Decimal | None
    output_usd_per_mtok: Decimal
    reasoning_usd_per_mtok: Decimal | None
    audio_input_usd_per_mtok: Decimal | None
    audio_output_usd_per_mtok: Decimal | None
    image_input_usd_per_mtok: Decimal | None
    image_output_usd_per_mtok: Decimal | None
    input_usd_per_second: Decimal | None
    input_usd_per_character: Decimal | None
    output_usd_per_image: Decimal | None
    long_context_threshold: int | None
    long_input_usd_per_mtok: Decimal | None
    long_cached_input_usd_per_mtok: Decimal | None
    long_cache_write_5m_usd_per_mtok: Decimal | None
    long_cache_write_1h_usd_per_mtok: Decimal | None
    long_output_usd_per_mtok: Decimal | None
    request_fee_usd: Decimal
    max_output_tokens: int | None
    effective_from: dt.datetime
    source: str

    @staticmethod
    def resolve_provider(obj: Any) -> str | None:
        return obj.provider.name if obj.provider_id else None


class PriceSetOut(Schema):
    price: PriceOut
    changed: bool


# --- usage ---------------------------------------------------------------------------
class UsageOut(Schema):
    id: int
    request_id: str
    created_at: dt.datetime
    tenant_id: int
    key_id: int = Field(..., alias="api_key_id")
    endpoint: str
    public_model: str
    upstream_model: str
    provider: str
    status_code: int
    error_code: str
    stream: bool
    cache_hit: bool
    input_tokens: int
    cached_input_tokens: int
    cache_write_5m_tokens: int
    cache_write_1h_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_usd: str
    latency_ms: int
    ttft_ms: int | None

    @staticmethod
    def resolve_cost_usd(obj: Any) -> str:
        return usd_string(obj.cost_nanos)


class UsagePage(Schema):
    items: list[UsageOut]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next (older) page; null at the end.")


class AuditOut(Schema):
    id: int
    at: dt.datetime
    actor: str
    user_id: int | None
    action: str
    object_type: str
    object_id: str
    object_repr: str
    changes: dict[str, Any]
    request_id: str
