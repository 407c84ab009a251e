"""The web an augmentor sees, faked: a SearXNG instance, Perplexity and pages.

One aiohttp server on a loopback address (in a thread, with its own loop)
that records every request it receives:

* `GET /search?q=...&format=json`: SearXNG's JSON answer with `results`
  (tests set them; `searxng_status` other than 200 answers that status);
* `POST /perplexity/chat/completions`: a Perplexity answer (`perplexity_text`)
  with its `search_results` and `citations` (tests set `perplexity_sources`);
* `GET /page/<name>`: the HTML (or `text/plain`, `image/png`...) tests put in
  `pages`; `GET /big`: a page larger than any cap; `GET /slow`: no headers ever (it
  hangs until the server stops);
* `GET /redirect?to=URL`: a 302 to URL.
"""

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from proxy.tests.threaded_server import ThreadServed


@dataclass(frozen=True)
class WebRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeWeb(ThreadServed):
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[WebRequest] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)  # SearXNG's
    searxng_status: int = 200
    perplexity_text: str = "Perplexity found that the answer is 42."
    perplexity_sources: list[dict[str, Any]] = field(default_factory=list)
    pages: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (content type, body)
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def page(self, name: str, html: str, content_type: str = "text/html") -> str:
        """Serve `html` at /page/<name>; returns its URL."""
        self.pages[name] = (content_type, html)
        return f"{self.url}/page/{name}"

    def seen(self, path: str) -> list[WebRequest]:
        return [r for r in self.requests if r.path == path]

    # --- handlers -----------------------------------------------------------
    async def _record(self, request: web.Request) -> None:
        body = await request.read()
        self.requests.append(WebRequest(request.method, request.path, dict(request.query), dict(request.headers), body))

    async def _search(self, request: web.Request) -> web.Response:
        await self._record(request)
        if self.searxng_status != 200:
            return web.json_response({"error": "engines down"}, status=self.searxng_status)
        answer = {
            "query": request.query.get("q", ""),
            "number_of_results": len(self.results),
            "results": self.results,
            "answers": [],
            "infoboxes": [],
            "suggestions": [],
            "unresponsive_engines": [],
        }
        return web.json_response(answer)

    async def _perplexity(self, request: web.Request) -> web.Response:
        await self._record(request)
        answer = {
            "id": "pplx-1",
            "model": "sonar",
            "choices": [
                {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": self.perplexity_text}}
            ],
            "citations": [s["url"] for s in self.perplexity_sources],
            "search_results": self.perplexity_sources,
            "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14},
        }
        return web.json_response(answer)

    async def _page(self, request: web.Request) -> web.Response:
        await self._record(request)
        found = self.pages.get(request.match_info["name"])
        if found is None:
            return web.Response(status=404, text="no such page")
        content_type, body = found
        return web.Response(body=body.encode(), content_type=content_type, charset="utf-8")

    async def _big(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        response = web.StreamResponse(headers={"Content-Type": "text/html"})
        await response.prepare(request)
        await response.write(b"<html><body><p>" + b"big " * 1024)
        try:
            for _ in range(4096):  # 16 MiB unless the reader stops first
                await response.write(b"word " * 819)
        except (ConnectionResetError, RuntimeError):
            pass
        return response

    async def _slow(self, request: web.Request) -> web.Response:
        await self._record(request)
        await asyncio.Event().wait()  # never set: the scraper's time cap is what ends it
        return web.Response(text="<p>never</p>", content_type="text/html")

    async def _redirect(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.Response(status=302, headers={"Location": request.query["to"]})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/search", self._search)
        app.router.add_post("/perplexity/chat/completions", self._perplexity)
        app.router.add_get("/page/{name}", self._page)
        app.router.add_get("/big", self._big)
        app.router.add_get("/slow", self._slow)
        app.router.add_get("/redirect", self._redirect)
        return app

    # --- running --------------------------------------------------------------
    async def _after_cleanup(self) -> None:
        await _cancel_others()


async def _cancel_others() -> None:
    """Handlers still waiting (`/slow`) end before the loop stops, not as
    'Task was destroyed but it is pending' at exit."""
    others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)
