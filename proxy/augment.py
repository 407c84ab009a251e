"""Augmentors: the pipeline's augment step (proxy.pipeline.handle), after the
cache and the input guardrails, before forwarding.

A client asks for an augmentor's name (`researcher`). Its designator model
is asked, in one chat completion through the gateway's own routing and
forwarding (proxy.forward.Attempts: same key, same budgets, its own usage
record with purpose `augmentation`), what the query needs:

    direct                    nothing: the target answers the prompt as is
    search:<query>            a web search (proxy.augment_search)
    scrape:<url>,<url>        those pages, read (proxy.scrape)
    search+scrape:<query>     a search, then its first results' pages read

What was found is added to the prompt as a system message (Anthropic:
`system`, Responses: `instructions`, completions: before the prompt), cut to
the augmentor's max_context_tokens (at four bytes a token, the gateway's
estimate everywhere), and the target model answers. The answer says
`x-gateway-augmented: direct|search|scrape|search+scrape`: what actually
reached the prompt.

Nothing here fails the request: a designator that errors, times out
(AUGMENT_DESIGNATOR_TIMEOUT_SECONDS) or answers something else, a search
provider that fails and a page that cannot be (or may not be) scraped all
degrade towards `direct`, each recorded as a step of the request's trace and
logged. Only the client's own refusals stop it: a spent budget or credit.

What was found passes the request's input guardrails before it joins the
prompt, as the client's own text does: a redaction replaces the match; a
block drops all that was found (the request goes on `direct`, the trace
says which guardrail), rather than refusing a client that did not write
the text.
"""

import asyncio
import dataclasses
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import orjson
from django.conf import settings

from gateway.kernel.context import TenantContext
from gateway.kernel.errors import GatewayError
from proxy.augment_search import SearchError, SearchResult, web_search
from proxy.dialects import ClientCall, Dialect
from proxy.forward import Attempts
from proxy.guardrails.run import GuardrailRun
from proxy.routers import answer_text, query_text
from proxy.routing import Augmentor, Catalog
from proxy.scrape import Page, ScrapeError, scrape

log = logging.getLogger(__name__)

PURPOSE = "augmentation"  # UsageEvent.purpose of the designator's call
AUGMENTED_HEADER = "x-gateway-augmented"
BYTES_PER_TOKEN = 4  # as proxy.ratelimit.tokens_estimate counts a prompt
ANSWER_TOKENS = 200  # one line naming an action and a query or a few URLs
_SPEND_REFUSALS = frozenset({"budget_exceeded", "insufficient_credit"})
_AUGMENTABLE = frozenset(
    {
        Dialect.CHAT,
        Dialect.MESSAGES,
        Dialect.RESPONSES,
        Dialect.COMPLETIONS,
        Dialect.OLLAMA_CHAT,
        Dialect.OLLAMA_GENERATE,
    }
)
_DECISION = re.compile(r"^(direct|search\+scrape|search|scrape)\s*(?::\s*(.*))?$", re.IGNORECASE | re.DOTALL)
_URL = re.compile(r"https?://[^\s,<>\"']+", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Decision:
    action: str  # direct, search, scrape, search+scrape
    query: str = ""
    urls: tuple[str, ...] = ()


@dataclass
class Augmented:
    """The call to forward, what reached its prompt (the header's value) and
    the steps taken, for the trace."""

    call: ClientCall
    label: str = "direct"
    steps: list[dict[str, Any]] = field(default_factory=list)


async def augment(
    catalog: Catalog,
    ctx: TenantContext,
    augmentor: Augmentor,
    call: ClientCall,
    request_id: str,
    guardrails: GuardrailRun | None = None,
) -> Augmented:
    """`call` with what the designator asked for added to its prompt, as
    the request's input guardrails (`guardrails`) let it through."""
    result = Augmented(call)
    query = query_text(call.body)[: settings.AUGMENT_QUERY_MAX_CHARS]
    if call.dialect not in _AUGMENTABLE or not query.strip():
        result.steps.append({"step": "designator", "skipped": "nothing to augment"})
        return result
    decision = await _designate(catalog, ctx, augmentor, query, request_id, result.steps)
    if decision.action == "direct":
        return result
    results, pages = await _look_up(augmentor, decision, result.steps)
    block, truncated = context_block(decision, results, pages, augmentor.max_context_tokens * BYTES_PER_TOKEN)
    if block and guardrails is not None:
        block = _guarded(guardrails, block, result.steps)
    augmented = augmented_body(call, block) if block else None
    if augmented is None:
        result.steps.append({"step": "context", "added": 0})
        return result
    result.call = dataclasses.replace(call, body=augmented, size=len(orjson.dumps(augmented)))
    result.label = "+".join(kind for kind, found in (("search", results), ("scrape", pages)) if found)
    result.steps.append({"step": "context", "added": len(block), "truncated": truncated, "text": block})
    return result


async def _designate(
    catalog: Catalog,
    ctx: TenantContext,
    augmentor: Augmentor,
    query: str,
    request_id: str,
    steps: list[dict[str, Any]],
) -> Decision:
    """The designator's decision; `direct` (recorded) when it cannot say."""
    plan = catalog.resolve(augmentor.designator)
    if plan is None:
        return _degraded(augmentor, steps, "designator", f"{augmentor.designator!r} is not a served model")
    body = designator_body(augmentor, query)
    call = ClientCall(Dialect.CHAT, body, len(orjson.dumps(body)), False)
    attempts = Attempts(ctx, call, f"{request_id}~{PURPOSE}", None, None, purpose=PURPOSE)
    timeout = settings.AUGMENT_DESIGNATOR_TIMEOUT_SECONDS
    try:
        response = await asyncio.wait_for(attempts.run(catalog, plan), timeout)
    except TimeoutError:
        return _degraded(augmentor, steps, "designator", f"no answer within {timeout}s")
    except GatewayError as error:
        if error.code in _SPEND_REFUSALS:
            raise
        return _degraded(augmentor, steps, "designator", error.code)
    except Exception:  # never the client's error: the target answers directly
        log.exception("augmentor %s: the designator call failed; answering directly", augmentor.name)
        steps.append({"step": "designator", "error": "failed"})
        return Decision("direct")
    status = response.status_code
    answer = answer_text(getattr(response, "content", b"") if status == 200 else b"")
    decision = decision_parse(answer, augmentor.max_scrape_urls)
    if decision is None:
        return _degraded(
            augmentor, steps, "designator", f"HTTP {status}, an answer that is no decision: {answer[:200]!r}"
        )
    urls = list(decision.urls)  # a list: the trace's scrub walks lists
    steps.append({"step": "designator", "decision": decision.action, "query": decision.query, "urls": urls})
    return decision


def _degraded(augmentor: Augmentor, steps: list[dict[str, Any]], step: str, why: str) -> Decision:
    log.warning("augmentor %s: %s: %s; answering directly", augmentor.name, step, why)
    steps.append({"step": step, "error": why})
    return Decision("direct")


async def _look_up(
    augmentor: Augmentor, decision: Decision, steps: list[dict[str, Any]]
) -> tuple[list[SearchResult], list[Page]]:
    """The search results and pages the decision asks for, each failure
    recorded and left out."""
    results: list[SearchResult] = []
    urls = list(decision.urls)
    if decision.action in ("search", "search+scrape"):
        provider = augmentor.search_provider
        try:
            results = await web_search(provider, decision.query, augmentor.max_search_results)
            steps.append({"step": "search", "provider": provider, "query": decision.query, "results": len(results)})
        except SearchError as error:
            log.warning("augmentor %s: search failed: %s", augmentor.name, error)
            steps.append({"step": "search", "provider": provider, "query": decision.query, "error": str(error)})
        if decision.action == "search+scrape":
            urls = [r.url for r in results if r.url][: augmentor.max_scrape_urls]
    pages = await asyncio.gather(*(_scraped(augmentor, url, steps) for url in urls[: augmentor.max_scrape_urls]))
    return results, [page for page in pages if page is not None and page.text]


async def _scraped(augmentor: Augmentor, url: str, steps: list[dict[str, Any]]) -> Page | None:
    try:
        page = await scrape(url)
    except ScrapeError as error:
        log.warning("augmentor %s: %s not scraped: %s", augmentor.name, url, error)
        steps.append({"step": "scrape", "url": url, "error": str(error)})
        return None
    steps.append({"step": "scrape", "url": url, "final_url": page.url, "chars": len(page.text)})
    return page


def _guarded(guardrails: GuardrailRun, block: str, steps: list[dict[str, Any]]) -> str:
    """The found text as the input guardrails let it through; "" when one
    blocks it (recorded by name, never the matched text)."""
    checked, blocking = guardrails.check_found(block)
    if checked is None:
        assert blocking is not None
        steps.append({"step": "guardrails", "dropped": len(block), "guardrail": blocking.name, "kind": blocking.kind})
        return ""
    return checked


def designator_body(augmentor: Augmentor, query: str) -> dict[str, Any]:
    """The chat completion the designator is asked: the actions it may
    choose in the system message, the query as the user message."""
    lines = [
        "You decide whether answering the user's request needs information from the web. "
        "Reply with exactly one line, one of:",
        "direct",
        "search:<a web search query>",
        "scrape:<url>,<url>   (pages the request names, to be read)",
        "search+scrape:<a web search query>   (search, then read the pages found)",
        "Choose direct when the request can be answered without looking anything up.",
    ]
    if augmentor.purpose:
        lines.append(f"Purpose: {augmentor.purpose}")
    return {
        "model": augmentor.designator,
        "messages": [{"role": "system", "content": "\n".join(lines)}, {"role": "user", "content": query}],
        "temperature": 0,
        "max_tokens": ANSWER_TOKENS,
        "stream": False,
    }


def decision_parse(text: str, max_urls: int) -> Decision | None:
    """The decision an answer names (its first line, fences and quotes
    aside), or None. `scrape` keeps the first `max_urls` http(s) URLs."""
    text = text.strip().strip("`").strip()
    line = next((line.strip().strip("\"'").strip() for line in text.splitlines() if line.strip()), "")
    found = _DECISION.match(line)
    if found is None:
        return None
    action, argument = found.group(1).lower(), (found.group(2) or "").strip()
    if action == "direct":
        return Decision("direct") if not argument else None
    if action == "scrape":
        urls = tuple(dict.fromkeys(_URL.findall(argument)))[:max_urls]
        return Decision("scrape", urls=urls) if urls else None
    return Decision(action, query=argument) if argument else None


def context_block(
    decision: Decision, results: list[SearchResult], pages: list[Page], max_bytes: int
) -> tuple[str, bool]:
    """What is added to the prompt, at most `max_bytes` of UTF-8 (cut at a
    character), and whether it was cut; "" when nothing was found."""
    if not results and not pages:
        return "", False
    parts = [
        "Context found on the web for the user's request"
        + (f' (search: "{decision.query}")' if decision.query else "")
        + ". Use it where it helps, and name the URLs you rely on.",
    ]
    for i, r in enumerate(results, 1):
        parts.append("\n".join(x for x in (f"[{i}] {r.title}".rstrip(), r.url and f"URL: {r.url}", r.snippet) if x))
    for page in pages:
        parts.append(f"Page {page.url}" + (f" ({page.title})" if page.title else "") + ":\n" + page.text)
    block = "\n\n".join(parts)
    raw = block.encode()
    if len(raw) <= max_bytes:
        return block, False
    return raw[:max_bytes].decode("utf-8", errors="ignore"), True


def augmented_body(call: ClientCall, block: str) -> dict[str, Any] | None:
    """The client's body with `block` added where its dialect keeps
    instructions; None when the body has no place for it."""
    body = dict(call.body)
    if call.dialect in (Dialect.CHAT, Dialect.OLLAMA_CHAT):
        messages = list(body.get("messages") or [])
        users = [i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "user"]
        messages.insert(users[-1] if users else 0, {"role": "system", "content": block})
        body["messages"] = messages
    elif call.dialect is Dialect.MESSAGES:
        system = body.get("system")
        if isinstance(system, list):
            body["system"] = [*system, {"type": "text", "text": block}]
        else:
            body["system"] = f"{system}\n\n{block}" if isinstance(system, str) and system else block
    elif call.dialect is Dialect.RESPONSES:
        instructions = body.get("instructions")
        body["instructions"] = f"{instructions}\n\n{block}" if isinstance(instructions, str) and instructions else block
    elif isinstance(body.get("prompt"), str):  # completions, Ollama generate
        body["prompt"] = f"{block}\n\n{body['prompt']}"
    else:
        return None
    return body
