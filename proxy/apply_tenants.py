"""gateway_apply's `tenants:` section (proxy.apply): each listed tenant's response
cache and semantic cache settings. Tenants are created with tenant_create (they
carry budgets and credit); the file only sets what it names, and a setting
left out is kept. Tenants not listed are left alone.

    tenants:
      - slug: acme
        cache_ttl: 3600
        semantic:
          threshold: 0.95          # null: the semantic cache off
          scope: last-user-message # or conversation
          system_prompt: include   # or ignore
          min_tokens: 5
          max_tokens: 2000
          ttl: 600
          embedding_model: embed-small
"""

from collections import Counter
from decimal import Decimal, InvalidOperation
from typing import Any

from accounts.audit import AuditActor
from accounts.models import SemanticScope, Tenant
from accounts.services import tenant_update

_SCOPES = {"last-user-message": SemanticScope.LAST_USER_MESSAGE, "conversation": SemanticScope.CONVERSATION}
_SYSTEM = {"include": True, "ignore": False}
_COUNTS = {"min_tokens": "semantic_min_answer_tokens", "max_tokens": "semantic_max_answer_tokens"}
_SEMANTIC_KEYS = {"threshold", "scope", "system_prompt", "ttl", "embedding_model", *_COUNTS}


def tenants_apply(items: list[dict[str, Any]], actor: AuditActor) -> Counter[str]:
    """Raises ValueError (the caller's ApplyError) for an entry that cannot be applied."""
    counts: Counter[str] = Counter()
    for item in items:
        slug = str(item["slug"])
        unknown = set(item) - {"slug", "cache_ttl", "semantic"}
        if unknown:
            raise ValueError(f"tenant {slug}: unknown fields {', '.join(sorted(unknown))}")
        tenant = Tenant.objects.select_for_update().filter(slug=slug).first()
        if tenant is None:
            raise ValueError(f"tenant {slug}: no such tenant (create it with tenant_create)")
        values = _semantic(slug, item.get("semantic"), "semantic" in item)
        if "cache_ttl" in item:
            values["cache_ttl_seconds"] = _whole(slug, "cache_ttl", item["cache_ttl"], optional=True)
        changed = tenant_update(tenant=tenant, actor=actor, **values)
        counts["tenant " + ("saved" if changed else "unchanged")] += 1
    return counts


def _semantic(slug: str, given: Any, present: bool) -> dict[str, Any]:
    if not present:
        return {}
    if given is None:
        return {"semantic_threshold": None}
    if not isinstance(given, dict):
        raise ValueError(f"tenant {slug}: semantic must be a mapping")
    unknown = set(given) - _SEMANTIC_KEYS
    if unknown:
        raise ValueError(f"tenant {slug}: unknown semantic fields {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    if "threshold" in given:
        values["semantic_threshold"] = _threshold(slug, given["threshold"])
    if "scope" in given:
        values["semantic_scope"] = _choice(slug, "scope", given["scope"], _SCOPES)
    if "system_prompt" in given:
        values["semantic_include_system"] = _choice(slug, "system_prompt", given["system_prompt"], _SYSTEM)
    for name, field in _COUNTS.items():
        if name in given:
            values[field] = _whole(slug, name, given[name], optional=True)
    if "ttl" in given:
        values["semantic_ttl_seconds"] = _whole(slug, "ttl", given["ttl"], optional=True)
    if "embedding_model" in given:
        model = given["embedding_model"]
        if model is not None and not isinstance(model, str):
            raise ValueError(f"tenant {slug}: embedding_model must be a model name")
        values["semantic_embedding_model"] = model or ""
    return values


def _threshold(slug: str, value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        threshold = Decimal(str(value))
    except InvalidOperation:
        threshold = Decimal("NaN")
    if isinstance(value, bool) or not threshold.is_finite() or not 0 <= threshold <= 1:
        raise ValueError(f"tenant {slug}: semantic threshold must be between 0 and 1, for example 0.95")
    return threshold.quantize(Decimal("0.001"))


def _choice(slug: str, name: str, value: Any, choices: dict[str, Any]) -> Any:
    if value not in choices:
        raise ValueError(f"tenant {slug}: semantic {name} must be one of {', '.join(choices)}")
    return choices[value]


def _whole(slug: str, name: str, value: Any, *, optional: bool) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"tenant {slug}: {name} must be a whole number of 0 or more")
    return value
