"""The semantic cache on the request path: a question embedded, its nearest earlier one found.

Asked in the cache step after the exact cache missed (proxy.caching), for
chat completions of a key whose semantic cache is on. The question is
embedded through one of the gateway's own embeddings routes
(CACHESTORE_SEMANTIC_EMBEDDING_MODEL, or the tenant's own): one call through
the gateway's routing and forwarding (proxy.forward.Attempts), as the smart
router's designator is, so it is made for the same key, checked against its
budgets and billed to it, with its own usage record of purpose
`semantic_cache`. The nearest earlier question of the same tenant, resolved
model and parameters (cachestore.semantic_keys) answers when it is at least
as similar as the key's threshold.

An embedding that fails, takes longer than CACHESTORE_SEMANTIC_TIMEOUT_SECONDS
or answers no vector leaves the request a plain miss: never an error. Only
the client's own refusals (a spent budget or credit) stop it here.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from django.conf import settings

from cachestore.semantic_index import semantic_index, unit_vector
from cachestore.semantic_keys import partition_key, question_text
from gateway.kernel.context import RouteTarget, SemanticCacheSettings, TenantContext, UsageEvent
from gateway.kernel.errors import GatewayError
from proxy.dialects import ClientCall, Dialect
from proxy.forward import Attempts
from proxy.routing import Catalog

log = logging.getLogger(__name__)

PURPOSE = "semantic_cache"  # UsageEvent.purpose of the embedding call
# The client's own refusals: a spent budget or credit is not an embedding failure.
_SPEND_REFUSALS = frozenset({"budget_exceeded", "insufficient_credit"})
_pending: set["asyncio.Task[None]"] = set()


@dataclass(frozen=True, slots=True)
class SemanticQuery:
    """An embedded question, and where in the index its partners are."""

    tenant_id: int
    partition: str
    vector: Any  # a float32 unit vector
    settings: SemanticCacheSettings


@dataclass(frozen=True, slots=True)
class SemanticMatch:
    entry_key: str
    similarity: float


@dataclass(frozen=True, slots=True)
class SemanticProbe:
    """One request's semantic lookup, for the cache step to ask when the
    exact cache has no answer (proxy.caching.cache_lookup)."""

    ctx: TenantContext
    catalog: Catalog
    call: ClientCall
    target: RouteTarget  # the resolved model: its answers only are candidates
    request_id: str
    # The call as the input guardrails let it through (a block raises): the
    # embeddings provider is a provider too, and sees no more than the others.
    checked: Callable[[], ClientCall] | None = None

    async def lookup(self) -> tuple[SemanticQuery | None, SemanticMatch | None]:
        """The question embedded (None: nothing to compare), and the nearest
        earlier one when it reaches the threshold."""
        call = self.call if self.checked is None else self.checked()
        query = await semantic_query(self.ctx, self.catalog, call, self.target, self.request_id)
        return query, None if query is None else await semantic_match(query)


def semantic_probe(
    ctx: TenantContext,
    catalog: Catalog,
    call: ClientCall,
    target: RouteTarget,
    request_id: str,
    *,
    checked: Callable[[], ClientCall] | None = None,
) -> SemanticProbe | None:
    """The request's semantic lookup, or None when the key's semantic cache is off or the call is no chat."""
    if ctx.semantic is None or call.dialect is not Dialect.CHAT:
        return None
    return SemanticProbe(ctx, catalog, call, target, request_id, checked)


async def semantic_query(
    ctx: TenantContext, catalog: Catalog, call: ClientCall, target: RouteTarget, request_id: str
) -> SemanticQuery | None:
    """The request's question embedded, or None when the semantic cache has
    nothing to compare (off, not a chat, no question, no embedding)."""
    semantic = ctx.semantic
    if semantic is None or call.dialect is not Dialect.CHAT:
        return None
    text = question_text(call.body, scope=semantic.scope)[: settings.CACHESTORE_SEMANTIC_QUERY_MAX_CHARS]
    model = semantic.embedding_model or settings.CACHESTORE_SEMANTIC_EMBEDDING_MODEL
    if not text.strip() or not model:
        return None
    vector = await _embedded(ctx, catalog, model, text, request_id)
    if vector is None:
        return None
    partition = partition_key(
        tenant_id=ctx.tenant_id,
        endpoint=call.dialect.value,
        provider=target.provider.name,
        upstream_model=target.upstream_model,
        body=call.body,
        scope=semantic.scope,
        include_system=semantic.include_system,
        embedding_model=model,
    )
    return SemanticQuery(ctx.tenant_id, partition, vector, semantic)


async def semantic_match(query: SemanticQuery) -> SemanticMatch | None:
    """The nearest earlier question at or above the threshold, or None."""
    try:
        found = await semantic_index().nearest(query.tenant_id, query.partition, query.vector)
    except Exception:  # the index could not load: a miss, not an error
        log.warning("semantic cache: lookup failed; the request is a miss", exc_info=True)
        return None
    if found is None or found.similarity < query.settings.threshold:
        return None
    return SemanticMatch(found.entry_key, min(found.similarity, 1.0))


def semantic_remember(query: SemanticQuery, *, entry_key: str, usage: UsageEvent, expires_at: float) -> None:
    """Index an answer stored under `entry_key` for later similar questions
    (in the background), unless its length is outside the key's bounds."""
    semantic = query.settings
    tokens = usage.usage.output_tokens + usage.usage.reasoning_tokens
    if semantic.min_answer_tokens is not None and tokens < semantic.min_answer_tokens:
        return
    if semantic.max_answer_tokens is not None and tokens > semantic.max_answer_tokens:
        return
    now = time.time()
    if semantic.ttl_seconds is not None:
        expires_at = min(expires_at, now + semantic.ttl_seconds)
    if expires_at <= now:
        return
    task = asyncio.get_running_loop().create_task(_stored(query, entry_key, now, expires_at), context=_fresh_context())
    _pending.add(task)
    task.add_done_callback(_pending.discard)


async def semantic_writes_settled() -> None:
    """Tests and shutdown: wait for vectors being stored."""
    if _pending:
        await asyncio.gather(*list(_pending), return_exceptions=True)


async def _stored(query: SemanticQuery, entry_key: str, created_at: float, expires_at: float) -> None:
    try:
        await semantic_index().add(
            query.tenant_id, query.partition, entry_key, query.vector, created_at=created_at, expires_at=expires_at
        )
    except Exception:
        log.exception("semantic cache: a question's vector could not be stored")


async def _embedded(ctx: TenantContext, catalog: Catalog, model: str, text: str, request_id: str) -> Any:
    """`text` embedded by `model` through the gateway (a unit vector), or None (logged)."""
    plan = catalog.resolve(model)
    if plan is None:
        log.warning("semantic cache: embedding model %r is not a served model; the request is a miss", model)
        return None
    body = {"model": model, "input": text}
    call = ClientCall(Dialect.EMBEDDINGS, body, len(orjson.dumps(body)), False, output_tokens=0)
    attempts = Attempts(ctx, call, f"{request_id}~{PURPOSE}", None, None, purpose=PURPOSE)
    try:
        response = await asyncio.wait_for(attempts.run(catalog, plan), settings.CACHESTORE_SEMANTIC_TIMEOUT_SECONDS)
    except TimeoutError:
        log.warning(
            "semantic cache: no embedding within %ss; the request is a miss",
            settings.CACHESTORE_SEMANTIC_TIMEOUT_SECONDS,
        )
        return None
    except GatewayError as error:
        if error.code in _SPEND_REFUSALS:
            raise
        log.warning("semantic cache: the embedding failed (%s); the request is a miss", error.code)
        return None
    except Exception:  # never the client's error: a miss
        log.exception("semantic cache: the embedding call failed; the request is a miss")
        return None
    content = getattr(response, "content", b"") if response.status_code == 200 else b""
    vector = unit_vector(_first_embedding(content))
    if vector is None:
        log.warning("semantic cache: the embedding answer (HTTP %s) held no vector", response.status_code)
    return vector


def _first_embedding(content: bytes) -> Any:
    try:
        answer: Any = orjson.loads(content)
        values = answer["data"][0]["embedding"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return None
    return values if isinstance(values, list) else None


def _fresh_context() -> Any:
    # The write outlives the request and must not run in (and keep alive) its context.
    import contextvars

    return contextvars.Context()
