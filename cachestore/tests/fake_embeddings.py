"""A fake OpenAI embeddings upstream (aiohttp, in a thread): deterministic bag-of-words vectors.

Each word is hashed into one of `DIMS` dimensions; small words weigh less,
so "what is the capital of France?" and "what's the capital of France" are
near (0.962) while a question sharing no word is not. Model
`fake-embed-slow` answers after `SLOW_SECONDS`; `fake-embed-error` fails.
"""

import asyncio
import hashlib
import math
import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from proxy.tests.threaded_server import ThreadServed

DIMS = 256
SMALL_WORDS = frozenset({"a", "an", "the", "is", "are", "s", "of", "what", "to", "in", "do", "i"})
SLOW_SECONDS = 3.0


def embedding(text: str) -> list[float]:
    vector = [0.0] * DIMS
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        slot = int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "big") % DIMS
        vector[slot] += 0.3 if word in SMALL_WORDS else 1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


def similarity(one: str, other: str) -> float:
    return sum(a * b for a, b in zip(embedding(one), embedding(other), strict=True))


@dataclass
class FakeEmbeddings(ThreadServed):
    port: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def inputs(self, model: str | None = None) -> list[str]:
        return [r["input"] for r in list(self.requests) if model is None or r.get("model") == model]

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        if body.get("model") == "fake-embed-slow":
            await asyncio.sleep(SLOW_SECONDS)
        if body.get("model") == "fake-embed-error":
            return web.json_response({"error": {"message": "down", "type": "server_error"}}, status=500)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        tokens = sum(len(str(text).split()) for text in inputs)
        return web.json_response(
            {
                "object": "list",
                "data": [{"object": "embedding", "index": i, "embedding": embedding(t)} for i, t in enumerate(inputs)],
                "model": body.get("model"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/embeddings", self.handle)
        return app
