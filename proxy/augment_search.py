"""Web search for augmentation (proxy.augment): SearXNG or Perplexity.

- SearXNG: `GET {AUGMENT_SEARXNG_URL}/search?q=...&format=json` (the
  instance must have the json format enabled); each of its `results` gives a
  title, a URL and a snippet (`content`).
- Perplexity: one chat completion (`{AUGMENT_PERPLEXITY_BASE_URL}/chat/completions`,
  model AUGMENT_PERPLEXITY_MODEL, bearer PERPLEXITY_API_KEY) asked the query.
  Its answer is the first result; the pages it cites (`search_results`, else
  `citations`) follow, so that search+scrape can read them.

Both are staff-configured services, called through the gateway's shared
session within AUGMENT_SEARCH_TIMEOUT_SECONDS. Any failure is a SearchError:
the caller degrades to answering without search.
"""

import asyncio
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from django.conf import settings

from proxy.upstream import UpstreamTooLargeError, read_bounded, upstream_session

_MAX_ANSWER_BYTES = 4 * 1024 * 1024


class SearchError(Exception):
    """The search provider could not answer (unset, unreachable, an error, nonsense)."""


@dataclass(frozen=True, slots=True)
class SearchResult:
    title: str
    url: str  # "" for a provider's own answer (Perplexity)
    snippet: str


async def web_search(provider: str, query: str, limit: int) -> list[SearchResult]:
    """At most `limit` results for `query` from `provider` (searxng, perplexity)."""
    search = _PROVIDERS.get(provider)
    if search is None:
        raise SearchError(f"unknown search provider {provider!r}")
    try:
        async with asyncio.timeout(settings.AUGMENT_SEARCH_TIMEOUT_SECONDS):
            return (await search(query, limit))[:limit]
    except TimeoutError:
        raise SearchError(f"{provider}: no answer within {settings.AUGMENT_SEARCH_TIMEOUT_SECONDS}s") from None
    except (aiohttp.ClientError, UpstreamTooLargeError) as exc:
        raise SearchError(f"{provider}: could not be reached ({type(exc).__name__})") from None


async def _searxng(query: str, limit: int) -> list[SearchResult]:
    base = settings.AUGMENT_SEARXNG_URL.rstrip("/")
    if not base:
        raise SearchError("searxng: AUGMENT_SEARXNG_URL is not set")
    params = {"q": query, "format": "json"}
    async with upstream_session().get(f"{base}/search", params=params) as response:
        answer = await _json(response, "searxng")
    results = answer.get("results") if isinstance(answer, dict) else None
    if not isinstance(results, list):
        raise SearchError("searxng: the answer has no results list")
    found = [
        SearchResult(_str(r.get("title")), _str(r.get("url")), _str(r.get("content")))
        for r in results
        if isinstance(r, dict) and _str(r.get("url"))
    ]
    return found[:limit]


async def _perplexity(query: str, limit: int) -> list[SearchResult]:
    key = settings.PERPLEXITY_API_KEY
    if not key:
        raise SearchError("perplexity: PERPLEXITY_API_KEY is not set")
    url = settings.AUGMENT_PERPLEXITY_BASE_URL.rstrip("/") + "/chat/completions"
    body = {"model": settings.AUGMENT_PERPLEXITY_MODEL, "messages": [{"role": "user", "content": query}]}
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    async with upstream_session().post(url, data=orjson.dumps(body), headers=headers) as response:
        answer = await _json(response, "perplexity")
    try:
        text = answer["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise SearchError("perplexity: the answer has no message") from None
    found = [SearchResult("Perplexity", "", _str(text))] if _str(text) else []
    sources = answer.get("search_results")
    if isinstance(sources, list) and sources:
        found += [
            SearchResult(_str(s.get("title")), _str(s.get("url")), _str(s.get("snippet")))
            for s in sources
            if isinstance(s, dict) and _str(s.get("url"))
        ]
    else:
        citations = answer.get("citations")
        found += (
            [SearchResult("", c, "") for c in citations if isinstance(c, str)] if isinstance(citations, list) else []
        )
    return found


async def _json(response: aiohttp.ClientResponse, provider: str) -> Any:
    if response.status != 200:
        raise SearchError(f"{provider}: answered HTTP {response.status}")
    raw = await read_bounded(response, provider, _MAX_ANSWER_BYTES)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise SearchError(f"{provider}: the answer is not JSON") from None


def _str(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


_PROVIDERS = {"searxng": _searxng, "perplexity": _perplexity}
