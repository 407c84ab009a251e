"""A fake OpenAI-compatible provider: the one thing the tests fake.

It records every request it receives and answers by the requested model:

* any name: a chat completion of `words` (one SSE chunk per word when
  streaming, usage in a final chunk when `stream_options.include_usage`);
* `fake-cached`: usage with cached prompt tokens and reasoning tokens;
* `fake-slow`: streams with `slow_delay` seconds between chunks;
* `fake-error-<status>`: that status with an OpenAI error envelope;
* `fake-hang`: never answers (until the client gives up);
* `fake-plain-error`: a 500 whose body is not JSON.

Run alone for the benchmark or by hand: `python -m proxy.tests.fake_upstream --port 9100`.
"""

import argparse
import asyncio
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import ClientConnectionResetError, web

PROMPT_TOKENS = 12
EMBEDDING_TOKENS_PER_INPUT = 8
CREATED = 1_700_000_000
DEFAULT_WORDS = tuple(f"w{i}" for i in range(20))


@dataclass
class ReceivedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeUpstream:
    words: tuple[str, ...] = DEFAULT_WORDS
    slow_delay: float = 0.05
    requests: list[ReceivedRequest] = field(default_factory=list)
    disconnects: int = 0
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None
    _release: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # --- answers ------------------------------------------------------------
    def usage(self, model: str) -> dict[str, Any]:
        if model == "fake-cached":
            return {
                "prompt_tokens": 100,
                "completion_tokens": 30,
                "total_tokens": 130,
                "prompt_tokens_details": {"cached_tokens": 40},
                "completion_tokens_details": {"reasoning_tokens": 10},
            }
        n = len(self.words)
        return {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": n, "total_tokens": PROMPT_TOKENS + n}

    def completion(self, model: str) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": " ".join(self.words)},
                    "finish_reason": "stop",
                }
            ],
            "usage": self.usage(model),
        }

    def chunk(self, model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
        body = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + orjson.dumps(body) + b"\n\n"

    def stream_events(self, model: str, include_usage: bool) -> list[bytes]:
        events = [self.chunk(model, {"role": "assistant", "content": ""})]
        events += [self.chunk(model, {"content": (" " if i else "") + w}) for i, w in enumerate(self.words)]
        events.append(self.chunk(model, {}, finish="stop"))
        if include_usage:
            usage = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": CREATED,
                     "model": model, "choices": [], "usage": self.usage(model)}  # fmt: skip
            events.append(b"data: " + orjson.dumps(usage) + b"\n\n")
        events.append(b"data: [DONE]\n\n")
        return events

    async def handle_chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(ReceivedRequest(request.path, dict(request.headers), body))
        model = str(body.get("model", ""))
        if model.startswith("fake-error-"):
            status = int(model.rsplit("-", 1)[1])
            error = {"error": {"message": f"fake failure {status} for key sk-upstreamsecret123",
                               "type": "server_error", "param": None, "code": f"fake_{status}"}}  # fmt: skip
            headers = {"Retry-After": "7"} if status in (429, 503) else {}
            return web.json_response(error, status=status, headers=headers)
        if model == "fake-plain-error":
            return web.Response(status=500, text="<html>Internal Server Error</html>", content_type="text/html")
        if model == "fake-hang":
            assert self._release is not None
            await self._release.wait()  # until stop(): the client must give up first
            return web.json_response(self.completion(model))
        if not body.get("stream"):
            return web.json_response(self.completion(model))
        options = body.get("stream_options") or {}
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        delay = self.slow_delay if model == "fake-slow" else 0
        try:
            for event in self.stream_events(model, bool(options.get("include_usage"))):
                await response.write(event)
                if delay:
                    await asyncio.sleep(delay)
        except (ConnectionError, ClientConnectionResetError, asyncio.CancelledError):
            self.disconnects += 1
            raise
        return response

    async def handle_embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(ReceivedRequest(request.path, dict(request.headers), body))
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"object": "embedding", "index": i, "embedding": [0.25, -0.5, float(i)]} for i in range(len(inputs))]
        tokens = EMBEDDING_TOKENS_PER_INPUT * len(inputs)
        return web.json_response({"object": "list", "data": data, "model": body["model"],
                                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})  # fmt: skip

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.handle_chat)
        app.router.add_post("/v1/embeddings", self.handle_embeddings)
        return app

    # --- running --------------------------------------------------------------
    def start_in_thread(self) -> "FakeUpstream":
        """Serve from a thread with its own loop, for in-process and subprocess tests."""
        sock = socket.socket()
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        ready = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            self._release = asyncio.Event()
            # Short shutdown timeout: a `fake-hang` handler never finishes by itself.
            self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=0.5)
            self._loop.run_until_complete(self._runner.setup())
            self._loop.run_until_complete(web.SockSite(self._runner, sock).start())
            ready.set()
            self._loop.run_forever()

        threading.Thread(target=serve, name="fake-upstream", daemon=True).start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._runner is not None:
            assert self._release is not None
            self._loop.call_soon_threadsafe(self._release.set)
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)

    def wait_for_disconnects(self, count: int, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while self.disconnects < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.disconnects >= count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=9100)
    args = parser.parse_args()
    fake = FakeUpstream(port=args.port)
    fake._release = asyncio.Event()
    # The benchmark would otherwise keep every request in memory.
    fake.requests = _Discard()  # type: ignore[assignment]
    web.run_app(fake.app(), host="127.0.0.1", port=args.port, access_log=None, print=None)


class _Discard(list):  # type: ignore[type-arg]
    def append(self, item: Any) -> None:
        pass


if __name__ == "__main__":
    main()
