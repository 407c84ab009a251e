"""What the semantic cache compares, and what must be equal for a match. Pure.

Two requests may share an answer by meaning only when everything but the
conversation's words is equal: the tenant, the endpoint, the resolved model
(provider and upstream model), every other field of the body (temperature,
tools, response_format...), the embedding model, the match scope and, when
the system prompt is included, the system prompt itself. `partition_key`
hashes all of that; the index compares vectors within one partition only.

The system prompt is matched exactly rather than embedded with the question:
a long system prompt would dominate the vector and make every question under
it look alike.
"""

import hashlib
from typing import Any

import orjson

from cachestore.keys import normalized_body

LAST_USER_MESSAGE = "last_user_message"
CONVERSATION = "conversation"
_SYSTEM_ROLES = frozenset({"system", "developer"})


def question_text(body: dict[str, Any], *, scope: str) -> str:
    """The text embedded: the last user message, or every turn but the
    system prompt as `role: text` lines ("" when there is none)."""
    messages = body.get("messages")
    turns = [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []
    turns = [m for m in turns if m.get("role") not in _SYSTEM_ROLES]
    if scope == CONVERSATION:
        return "\n".join(f"{m.get('role')}: {_text(m.get('content'))}" for m in turns)
    for message in reversed(turns):
        if message.get("role") == "user":
            return _text(message.get("content"))
    return ""


def partition_key(
    *,
    tenant_id: int,
    endpoint: str,
    provider: str,
    upstream_model: str,
    body: dict[str, Any],
    scope: str,
    include_system: bool,
    embedding_model: str,
) -> str:
    params = {name: value for name, value in normalized_body(body).items() if name != "messages"}
    material: dict[str, Any] = {
        "tenant": tenant_id,
        "endpoint": endpoint,
        "model": f"{provider}/{upstream_model}",
        "params": params,
        "scope": scope,
        "embedding_model": embedding_model,
    }
    if include_system:
        messages = body.get("messages")
        material["system"] = [
            m.get("content")
            for m in (messages if isinstance(messages, list) else ())
            if isinstance(m, dict) and m.get("role") in _SYSTEM_ROLES
        ]
    return hashlib.sha256(orjson.dumps(material, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""
