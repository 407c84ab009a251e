"""Cache keys: scoped to the tenant by construction. Pure.

The key hashes the tenant, the endpoint, the resolved model (provider and
upstream model, so a re-pointed route never answers from the old model)
and the request body with key order, whitespace and the fields that do not
change the answer left out.
"""

import hashlib
from typing import Any

import orjson

# Fields that change who asked, how the answer travels or how it is billed,
# but not what it says.
IGNORED_FIELDS = frozenset(
    {
        "model",
        "user",
        "stream",
        "stream_options",
        "metadata",
        "store",
        "service_tier",
        "safety_identifier",
        "prompt_cache_key",
    }
)


def normalized_body(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in IGNORED_FIELDS}


def cache_key(*, tenant_id: int, endpoint: str, provider: str, upstream_model: str, body: dict[str, Any]) -> str:
    material = orjson.dumps(
        {
            "tenant": tenant_id,
            "endpoint": endpoint,
            "model": f"{provider}/{upstream_model}",
            "body": normalized_body(body),
        },
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(material).hexdigest()
