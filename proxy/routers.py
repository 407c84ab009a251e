"""Smart routers: the route step's first question (proxy.pipeline.route).

A client asks for a router's name (`auto`); the router's designator model is
asked, in one chat completion through the gateway's own routing and
forwarding (proxy.forward.Attempts: same key, same budgets, its own usage
record with purpose `routing`), which of the candidates should answer the
client's query. The candidate it names then answers the request.

A designator that fails, errors, takes longer than
PROXY_ROUTER_TIMEOUT_SECONDS or answers something that names no single
candidate sends the request to the router's fallback: never to an error.
Only the client's own refusals stop a request here: a key that may not use
the router's name or any of its candidates, and a spent budget or credit
(refused before anything goes upstream).

Candidates the key's allowed models do not cover are never offered. The
designator is the router's own machinery: a key that may use the router's
name has it called on its behalf (and billed to it) whether or not the key
lists the designator itself, as a key that lists an alias reaches its target.

Identical queries to one router from one tenant reuse a designation for
PROXY_ROUTER_CACHE_TTL_SECONDS (a bounded in-process map; 0: off).
"""

import asyncio
import hashlib
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import orjson
from django.conf import settings

from gateway.kernel.context import RoutePlan, TenantContext
from gateway.kernel.errors import GatewayError
from proxy.dialects import ClientCall, Dialect
from proxy.forward import Attempts
from proxy.routing import Candidate, Catalog, SmartRouter, augmented_plan, may_use, plan_for

log = logging.getLogger(__name__)

PURPOSE = "routing"  # UsageEvent.purpose of the designator's call
ROUTED_HEADER = "x-gateway-routed-to"
ANSWER_TOKENS = 50  # a JSON object naming one model fits in far fewer
_RECENT_MAX = 4096
# The client's own refusals: a spent budget or credit is not a designator failure.
_SPEND_REFUSALS = frozenset({"budget_exceeded", "insufficient_credit"})
# A call whose model the designator cannot pick for meaningfully: each
# candidate's vectors or token counts would differ, so the fallback answers.
_NOT_DESIGNATED = frozenset({Dialect.EMBEDDINGS, Dialect.COUNT_TOKENS})


async def routed_plan(
    catalog: Catalog, ctx: TenantContext, router: SmartRouter, call: ClientCall, request_id: str
) -> tuple[RoutePlan, str]:
    """The plan of the candidate that answers this call, and its name. When
    the chosen candidate's deployments and fallbacks all fail, the router's
    fallback is tried after them."""
    if not ctx.allows(router.name):
        raise _not_allowed(router.name)
    offered = tuple(c for c in router.candidates if may_use(catalog, ctx, c.name))
    if not offered:
        raise _not_allowed(router.name)
    chosen = await designate(catalog, ctx, router, offered, call, request_id)
    augmentor = catalog.augmentors.get(chosen)  # then augmented in the pipeline (proxy.augment)
    plan = plan_for(catalog, ctx, chosen) if augmentor is None else augmented_plan(catalog, ctx, augmentor)
    fallback = _fallback(router, offered)
    if fallback != chosen and fallback not in plan.fallbacks:
        plan = RoutePlan(plan.public_model, plan.deployments, (*plan.fallbacks, fallback))
    return plan, chosen


async def designate(
    catalog: Catalog,
    ctx: TenantContext,
    router: SmartRouter,
    offered: Sequence[Candidate],
    call: ClientCall,
    request_id: str,
) -> str:
    """The name of the candidate (one of `offered`) that answers `call`."""
    fallback = _fallback(router, offered)
    query = query_text(call.body)[: settings.PROXY_ROUTER_QUERY_MAX_CHARS]
    if len(offered) == 1 or call.dialect in _NOT_DESIGNATED or not query.strip():
        return fallback
    names = tuple(c.name for c in offered)
    # The router itself is part of the key: a changed designator, candidate,
    # description or purpose asks again.
    key = (ctx.tenant_id, router, names, hashlib.sha256(query.encode()).hexdigest())
    recent = _recent.get(key)
    if recent is not None:
        return recent
    chosen = await _ask(catalog, ctx, router, offered, query, request_id)
    if chosen is None:
        return fallback
    _recent.put(key, chosen)
    return chosen


def _fallback(router: SmartRouter, offered: Sequence[Candidate]) -> str:
    names = [c.name for c in offered]
    return router.fallback if router.fallback in names else names[0]


async def _ask(
    catalog: Catalog,
    ctx: TenantContext,
    router: SmartRouter,
    offered: Sequence[Candidate],
    query: str,
    request_id: str,
) -> str | None:
    """The designator's pick, or None (logged) when it cannot say."""
    plan = catalog.resolve(router.designator)
    if plan is None:
        log.warning(
            "router %s: designator %r is not a served model; the fallback answers", router.name, router.designator
        )
        return None
    body = designator_body(router, offered, query)
    call = ClientCall(Dialect.CHAT, body, len(orjson.dumps(body)), False)
    attempts = Attempts(ctx, call, f"{request_id}~{PURPOSE}", None, None, purpose=PURPOSE)
    try:
        response = await asyncio.wait_for(attempts.run(catalog, plan), settings.PROXY_ROUTER_TIMEOUT_SECONDS)
    except TimeoutError:
        timeout = settings.PROXY_ROUTER_TIMEOUT_SECONDS
        log.warning("router %s: no designation within %ss; the fallback answers", router.name, timeout)
        return None
    except GatewayError as error:
        if error.code in _SPEND_REFUSALS:
            raise
        log.warning("router %s: the designator failed (%s); the fallback answers", router.name, error.code)
        return None
    except Exception:  # never the client's error: the fallback answers
        log.exception("router %s: the designator call failed; the fallback answers", router.name)
        return None
    status = response.status_code
    content = getattr(response, "content", b"") if status == 200 else b""
    chosen = designation(answer_text(content), [c.name for c in offered])
    if chosen is None:
        log.warning(
            "router %s: the designator's answer (HTTP %s) names no candidate; the fallback answers", router.name, status
        )
    return chosen


def designator_body(router: SmartRouter, offered: Sequence[Candidate], query: str) -> dict[str, Any]:
    """The chat completion the designator is asked: the candidates with
    their descriptions and the router's purpose in the system message, the
    query as the user message, a JSON answer whose `model` is one of them."""
    names = [c.name for c in offered]
    lines = [
        "You choose which model should answer a user's request. Read the request, then pick the best suited "
        "of the models below.",
    ]
    if router.purpose:
        lines.append(f"Purpose of this choice: {router.purpose}")
    lines.append("Models:")
    lines += [f"- {c.name}: {c.description or '(no description)'}" for c in offered]
    lines.append(f'Answer with JSON only, {{"model": "<name>"}}, naming exactly one of: {", ".join(names)}.')
    schema = {
        "type": "object",
        "properties": {"model": {"type": "string", "enum": names}},
        "required": ["model"],
        "additionalProperties": False,
    }
    return {
        "model": router.designator,
        "messages": [{"role": "system", "content": "\n".join(lines)}, {"role": "user", "content": query}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "route", "strict": True, "schema": schema}},
        "temperature": 0,
        "max_tokens": ANSWER_TOKENS,
        "stream": False,
    }


def query_text(body: dict[str, Any]) -> str:
    """The client's query: the text of the last user message (chat,
    Anthropic messages, Ollama), of the last user input item (Responses) or
    the last prompt (completions, Ollama generate)."""
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return _text(message.get("content"))
        return ""
    for name in ("input", "prompt"):
        value = body.get(name)
        if isinstance(value, str):
            return value
        for item in reversed(value) if isinstance(value, list) else ():
            if isinstance(item, str):
                return item
            if isinstance(item, dict) and item.get("role", "user") == "user":
                return _text(item.get("content"))
    return ""


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def answer_text(content: bytes) -> str:
    """The message text of a chat completion's first choice ("" if none)."""
    try:
        answer: Any = orjson.loads(content)
        text = answer["choices"][0]["message"]["content"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return ""
    return text if isinstance(text, str) else ""


_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def designation(text: str, names: Sequence[str]) -> str | None:
    """The candidate an answer names: JSON `{"model": NAME}` (or a JSON
    string), else a plain text in which exactly one candidate's name appears
    as a word of its own; None for anything else."""
    text = text.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("model"), str):
        return _named(parsed["model"].strip(), names)
    if isinstance(parsed, str):
        return _named(parsed.strip(), names)
    found = {name for name in names if _mentions(text, name)}
    return found.pop() if len(found) == 1 else None


def _named(answer: str, names: Sequence[str]) -> str | None:
    if answer in names:
        return answer
    folded = [name for name in names if name.lower() == answer.lower()]
    return folded[0] if len(folded) == 1 else None


def _mentions(text: str, name: str) -> bool:
    # A name's own characters (letters, digits, `-`, `/`, `.` inside) must
    # not continue it: `gpt-4o` is not mentioned by `gpt-4o-mini`, but is by
    # "use gpt-4o." at the end of a sentence.
    return re.search(rf"(?<![\w./-]){re.escape(name)}(?![\w/-]|\.\w)", text, re.IGNORECASE) is not None


def _not_allowed(model: str) -> GatewayError:
    return GatewayError(403, "model_not_allowed", f"This API key may not use the model '{model}'.", param="model")


class _Recent:
    """Designations by (tenant, router as configured, candidates offered,
    query digest), each kept PROXY_ROUTER_CACHE_TTL_SECONDS, the oldest
    dropped past a fixed size."""

    def __init__(self) -> None:
        self.entries: OrderedDict[tuple[Any, ...], tuple[float, str]] = OrderedDict()

    def get(self, key: tuple[Any, ...]) -> str | None:
        found = self.entries.get(key)
        if found is None:
            return None
        if found[0] <= time.monotonic():
            self.entries.pop(key, None)
            return None
        return found[1]

    def put(self, key: tuple[Any, ...], name: str) -> None:
        ttl = settings.PROXY_ROUTER_CACHE_TTL_SECONDS
        if ttl <= 0:
            return
        self.entries[key] = (time.monotonic() + ttl, name)
        self.entries.move_to_end(key)
        while len(self.entries) > _RECENT_MAX:
            self.entries.popitem(last=False)


_recent = _Recent()
