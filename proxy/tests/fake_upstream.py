"""A fake OpenAI-compatible provider: the one thing the tests fake.

It records every request it receives and answers by the requested model:

* any name: a chat completion of `words` (one SSE chunk per word when
  streaming, usage in a final chunk when `stream_options.include_usage`);
* `fake-cached`: usage with cached prompt tokens and reasoning tokens;
* a name containing `fake-reasoning`: the answer's message also carries
  REASONING_TEXT as `reasoning_content` (streamed as one delta before the
  words), as DeepSeek and vLLM send a reasoning model's thinking;
* `fake-slow`: streams with `slow_delay` seconds between chunks;
* `fake-error-<status>`: that status with an OpenAI error envelope;
* `fake-hang`: never answers (until the client gives up);
* `fake-plain-error`: a 500 whose body is not JSON;
* a name in `scripted` (a dict tests fill, e.g. with a fresh name per
  test): a non-streamed chat completion whose message content is that
  text (a smart router's designator answering `{"model": "coder"}`);
* a request with `tools` whose last message is not a tool's result: a call
  of the first tool with TOOL_ARGUMENTS (`finish_reason: tool_calls`;
  streamed as OpenAI does, the arguments in two pieces).

Faults, for the resilience tests (chat completions only). Each is keyed by
its name alone (or by the name and a marker), so tests can run in any order:

* `fake-flaky-<status>-<k>[-after-<seconds>]`: the first k requests whose
  last user message has the same content (the marker) fail with <status>
  in an OpenAI error envelope and `Retry-After: <seconds>` (default 0);
  later ones are answered as any name is. Counted per model and marker in
  `flaky_seen`;
* `fake-slowheaders-<seconds>`: waits that long before the response
  headers (trips a first-byte timeout), then answers as any name;
* `fake-drop-<n>`: streams the first n events, then closes the TCP
  connection in the middle of the chunked body (non-streamed: a 200 whose
  JSON body is cut off the same way);
* `fake-malformed`: a 200 `text/event-stream` of MALFORMED_EVENTS: a cut-off
  JSON chunk, a data line that is not JSON and a last line without the
  blank line that ends an event; no `[DONE]` (non-streamed: a 200
  `application/json` body that is not JSON);
* `fake-trickle[-<seconds>]`: streams with `trickle_delay` (or <seconds>)
  before each event: every gap short, the whole long;
* `fake-silent-<seconds>`: streams the first event, goes silent that long
  (trips an idle timeout), then sends the rest.

* `fake-big-<bytes>`: an answer of about that many bytes (a 200 JSON
  completion with Content-Length; streamed: chunks of 1000 characters);
* `fake-bigchunked-<bytes>`: the same JSON without Content-Length (chunked);
* `fake-notsse-json`, `fake-notsse-error`, `fake-notsse-html`: a streamed
  request answered 200 with the whole JSON completion, with a JSON
  `{"error": ...}` object, or with an HTML page.

A fault's writes to a client that already gave up fail quietly and are not
counted in `disconnects` (which tests of the client going away read).

Other OpenAI endpoints, answering the same words:

* `POST /v1/completions` (legacy): `text_completion` objects, one choice
  per prompt; streamed one word per chunk, then a usage chunk (`choices: []`)
  when `stream_options.include_usage`; `fake-error-<status>` as for chat;
* `POST /v1/responses` (Responses API): a `response` object whose output is
  one `message` with one `output_text`; usage in the Responses shape
  (`input_tokens_details.cached_tokens`, `output_tokens_details.
  reasoning_tokens`; `fake-cached` as for chat). Streamed as named events:
  `response.created`, `response.in_progress`, `response.output_item.added`,
  `response.content_part.added`, one `response.output_text.delta` per word,
  the matching `.done` events, then `response.completed` carrying the whole
  response with its usage.

The same fake as a server that has chat completions only (a vLLM or a
proxy without the newer endpoints, configured as kind `openai`), under
`chat_only_url` (`/chat-only/v1`): chat and embeddings answer as above,
`/responses` and `/completions` record the request and answer 404
`{"detail": "Not Found"}`, as FastAPI-based servers do.

Anthropic's Messages API, as exactly as the tests need it:

* `POST /v1/messages`: a `message` with one text block of the same words,
  `stop_reason: end_turn`, usage with `input_tokens` (PROMPT_TOKENS),
  `cache_read_input_tokens`, `cache_creation_input_tokens` and the
  `cache_creation` 5m/1h split (all 0 unless the model name contains
  `fake-cached`, e.g. `claude-fake-cached`: see ANTHROPIC_CACHED_USAGE).
  Streamed as Anthropic does: `message_start` (output_tokens 1), `ping`,
  `content_block_start` / one `content_block_delta` per word /
  `content_block_stop`, `message_delta` (stop_reason and the full usage, as
  newer API versions send it), `message_stop`;
* when the request has `tools` and the last user message is not a
  `tool_result`: one `tool_use` block calling the first tool with
  `{"q": "w0"}`, `stop_reason: tool_use`, streamed as `input_json_delta`
  pieces;
* `claude-error-<status>`: that status with Anthropic's error envelope
  `{"type": "error", "error": {"type", "message"}}` (and `retry-after` on
  429 and 529); names containing `fake-slow` / `fake-hang` behave as above;
* like the real API: no `x-api-key` (nor `Authorization: Bearer`) -> 401
  `authentication_error`, no
  `anthropic-version` -> 400, no `max_tokens` -> 400
  `invalid_request_error`;
* a model name containing `fake-echo` (chat, or Anthropic's `claude-fake-echo`):
  the answer is the last user message, streamed one event per piece between
  `|` (the pieces joined, without the `|`, when not streamed): the output
  guardrail tests choose exactly where a stream splits;
* `POST /v1/messages/count_tokens`: `{"input_tokens": N}`, N a
  deterministic function of the body's system, messages and tools.

Run alone for the benchmark or by hand: `python -m proxy.tests.fake_upstream --port 9100`.
"""

import argparse
import asyncio
import re
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import ClientConnectionResetError, web

from proxy.tests.threaded_server import ThreadServed

PROMPT_TOKENS = 12
CHAT_ONLY_PREFIX = "/chat-only"  # see chat_only_url
EMBEDDING_TOKENS_PER_INPUT = 8
CREATED = 1_700_000_000
DEFAULT_WORDS = tuple(f"w{i}" for i in range(20))
TOOL_ARGUMENTS = '{"q": "w0"}'  # what a tool call from the fake asks
REASONING_TEXT = "The user wants the words."  # the thinking of a `fake-reasoning` model
ANTHROPIC_CACHED_USAGE = {
    "input_tokens": 50,
    "cache_read_input_tokens": 40,
    "cache_creation_input_tokens": 30,
    "cache_creation": {"ephemeral_5m_input_tokens": 20, "ephemeral_1h_input_tokens": 10},
}
TOOL_USE_INPUT = {"q": "w0"}
TOOL_USE_OUTPUT_TOKENS = 5
# How the input of the fake's tool call is streamed (the first piece is
# empty, as Anthropic's often is); together they are TOOL_USE_INPUT.
TOOL_USE_JSON_PIECES = ("", '{"q": "', 'w0"}')
# What `fake-malformed` streams: nothing in it is a chunk a client could read.
MALFORMED_EVENTS = (
    b'data: {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "choices": [{"index": 0,\n\n',
    b"data: <html>this is not json</html>\n\n",
    b"this line is not server-sent events",
)
_FLAKY = re.compile(r"fake-flaky-(?P<status>\d{3})-(?P<failures>\d+)(?:-after-(?P<after>\d+(?:\.\d+)?))?")
_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass
class ReceivedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeUpstream(ThreadServed):
    words: tuple[str, ...] = DEFAULT_WORDS
    slow_delay: float = 0.05
    trickle_delay: float = 0.3
    requests: list[ReceivedRequest] = field(default_factory=list)
    # (model, marker) -> how many requests a `fake-flaky-...` model has seen
    flaky_seen: dict[tuple[str, str], int] = field(default_factory=dict)
    # model -> the message content it answers with (see the module doc)
    scripted: dict[str, str] = field(default_factory=dict)
    disconnects: int = 0
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None
    _release: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def chat_only_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{CHAT_ONLY_PREFIX}/v1"

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
                    "message": {"role": "assistant", "content": " ".join(self.words)}
                    | ({"reasoning_content": REASONING_TEXT} if "fake-reasoning" in model else {}),
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
        if "fake-reasoning" in model:
            events.append(self.chunk(model, {"reasoning_content": REASONING_TEXT}))
        events += [self.chunk(model, {"content": (" " if i else "") + w}) for i, w in enumerate(self.words)]
        events.append(self.chunk(model, {}, finish="stop"))
        if include_usage:
            usage = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": model,
                "choices": [],
                "usage": self.usage(model),
            }
            events.append(b"data: " + orjson.dumps(usage) + b"\n\n")
        events.append(b"data: [DONE]\n\n")
        return events

    @staticmethod
    def wants_tool_call(body: dict[str, Any]) -> str | None:
        """The tool to call: the first one offered, unless the last message
        already carries a tool's result."""
        tools, messages = body.get("tools"), body.get("messages") or [{}]
        if not tools or messages[-1].get("role") == "tool":
            return None
        return str(tools[0]["function"]["name"])

    def tool_call_completion(self, model: str, tool: str) -> dict[str, Any]:
        answer = self.completion(model)
        call = {"id": "call_fake", "type": "function", "function": {"name": tool, "arguments": TOOL_ARGUMENTS}}
        answer["choices"][0].update(
            message={"role": "assistant", "content": None, "tool_calls": [call]}, finish_reason="tool_calls"
        )
        return answer

    def tool_call_events(self, model: str, tool: str, include_usage: bool) -> list[bytes]:
        """As OpenAI streams a call: id and name first, then the arguments in pieces."""
        start = {"index": 0, "id": "call_fake", "type": "function", "function": {"name": tool, "arguments": ""}}
        events = [self.chunk(model, {"role": "assistant", "content": None, "tool_calls": [start]})]
        half = len(TOOL_ARGUMENTS) // 2
        for piece in (TOOL_ARGUMENTS[:half], TOOL_ARGUMENTS[half:]):
            events.append(self.chunk(model, {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
        events.append(self.chunk(model, {}, finish="tool_calls"))
        if include_usage:
            usage = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": model,
                "choices": [],
                "usage": self.usage(model),
            }
            events.append(b"data: " + orjson.dumps(usage) + b"\n\n")
        return events + [b"data: [DONE]\n\n"]

    async def handle_chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(ReceivedRequest(request.path, dict(request.headers), body))
        model = str(body.get("model", ""))
        if (fault := await self.chat_fault(request, body, model)) is not None:
            return fault
        if model.startswith("fake-error-"):
            status = int(model.rsplit("-", 1)[1])
            error = {
                "error": {
                    "message": f"fake failure {status} for key sk-upstreamsecret123",
                    "type": "server_error",
                    "param": None,
                    "code": f"fake_{status}",
                }
            }
            headers = {"Retry-After": "7"} if status in (429, 503) else {}
            return web.json_response(error, status=status, headers=headers)
        if model == "fake-plain-error":
            return web.Response(status=500, text="<html>Internal Server Error</html>", content_type="text/html")
        if model == "fake-hang":
            assert self._release is not None
            await self._release.wait()  # until stop(): the client must give up first
            return web.json_response(self.completion(model))
        if model in self.scripted and not body.get("stream"):
            answer = self.completion(model)
            answer["choices"][0]["message"]["content"] = self.scripted[model]
            return web.json_response(answer)
        if "fake-echo" in model:
            return await self._echo_chat(request, body, model)
        tool = self.wants_tool_call(body)
        if not body.get("stream"):
            return web.json_response(self.tool_call_completion(model, tool) if tool else self.completion(model))
        options = body.get("stream_options") or {}
        include_usage = bool(options.get("include_usage"))
        events = self.tool_call_events(model, tool, include_usage) if tool else self.stream_events(model, include_usage)
        return await self._stream(request, events, self.slow_delay if model == "fake-slow" else 0)

    # --- echo (see the module doc) --------------------------------------------------
    async def _echo_chat(self, request: web.Request, body: dict[str, Any], model: str) -> web.StreamResponse:
        pieces = _echo_pieces(body)
        if not body.get("stream"):
            answer = self.completion(model)
            answer["choices"][0]["message"]["content"] = "".join(pieces)
            return web.json_response(answer)
        events = [self.chunk(model, {"role": "assistant", "content": ""})]
        events += [self.chunk(model, {"content": piece}) for piece in pieces]
        events += [self.chunk(model, {}, finish="stop"), b"data: [DONE]\n\n"]
        return await self._stream(request, events)

    # --- faults (see the module doc) ------------------------------------------------
    async def chat_fault(self, request: web.Request, body: dict[str, Any], model: str) -> web.StreamResponse | None:
        """The answer of a fault model; None: answer as any name would
        (not a fault model, a flaky one past its failures, or slow headers
        once the wait is over)."""
        if model.startswith("fake-flaky-"):
            return self._flaky(body, model)
        if model.startswith(("fake-big-", "fake-bigchunked-", "fake-notsse-")):
            return await self._size_fault(request, body, model)
        if model.startswith("fake-slowheaders-"):
            await asyncio.sleep(_seconds_suffix(model))
            if request.transport is None or request.transport.is_closing():
                raise asyncio.CancelledError  # the client gave up: nobody to answer
            return None
        if model.startswith("fake-drop-"):
            cut = int(model.rsplit("-", 1)[1])
            if not body.get("stream"):
                whole = orjson.dumps(self.completion(model))
                return await self._fault_stream(request, [whole[: len(whole) // 2]], "application/json", drop=True)
            return await self._fault_stream(request, self._chat_events(model, body)[:cut], drop=True)
        if model == "fake-malformed":
            if not body.get("stream"):
                cut_off = b'{"id": "chatcmpl-fake", "choices": ['
                return web.Response(status=200, body=cut_off, content_type="application/json")
            return await self._fault_stream(request, list(MALFORMED_EVENTS))
        if model == "fake-trickle" or model.startswith("fake-trickle-"):
            delay = self.trickle_delay if model == "fake-trickle" else _seconds_suffix(model)
            return await self._fault_stream(request, self._chat_events(model, body), delay=delay)
        if model.startswith("fake-silent-"):
            events = self._chat_events(model, body)
            return await self._fault_stream(request, events, silence_after_first=_seconds_suffix(model))
        return None

    async def _size_fault(self, request: web.Request, body: dict[str, Any], model: str) -> web.StreamResponse:
        if model == "fake-notsse-json":
            return web.json_response(self.completion(model))
        if model == "fake-notsse-error":
            error = {"message": "You exceeded your current quota.", "type": "insufficient_quota", "code": "quota"}
            return web.json_response({"error": error})
        if model == "fake-notsse-html":
            return web.Response(text="<html><body>Gateway Timeout</body></html>", content_type="text/html")
        size = int(model.rsplit("-", 1)[1])
        if body.get("stream"):
            piece = "x" * 1000
            events = [self.chunk(model, {"content": piece}) for _ in range(size // 1000 + 1)]
            return await self._fault_stream(request, events + self._chat_events(model, body)[-1:])
        answer = self.completion(model)
        answer["choices"][0]["message"]["content"] = "x" * size
        whole = orjson.dumps(answer)
        if model.startswith("fake-big-"):
            return web.Response(body=whole, content_type="application/json")
        pieces = [whole[i : i + 65536] for i in range(0, len(whole), 65536)]
        return await self._fault_stream(request, pieces, "application/json")

    def _flaky(self, body: dict[str, Any], model: str) -> web.Response | None:
        match = _FLAKY.fullmatch(model)
        if match is None:
            raise ValueError(f"not a flaky model name: {model}")
        key = (model, _last_user_text(body))
        seen = self.flaky_seen.get(key, 0)
        self.flaky_seen[key] = seen + 1
        status, failures = int(match["status"]), int(match["failures"])
        if seen >= failures:
            return None
        error = {
            "error": {
                "message": f"fake flaky failure {status} ({seen + 1} of {failures})",
                "type": "server_error",
                "param": None,
                "code": f"fake_{status}",
            }
        }
        return web.json_response(error, status=status, headers={"Retry-After": match["after"] or "0"})

    def _chat_events(self, model: str, body: dict[str, Any]) -> list[bytes]:
        return self.stream_events(model, bool((body.get("stream_options") or {}).get("include_usage")))

    async def _fault_stream(
        self,
        request: web.Request,
        events: list[bytes],
        content_type: str = "text/event-stream",
        *,
        delay: float = 0,
        silence_after_first: float = 0,
        drop: bool = False,
    ) -> web.StreamResponse:
        """Stream `events` (each after `delay`; a silence after the first),
        then end the response, or with `drop` close the connection instead.
        A client that gave up meanwhile is not an error here."""
        response = web.StreamResponse(headers={"Content-Type": content_type, "Cache-Control": "no-cache"})
        await response.prepare(request)
        try:
            for index, event in enumerate(events):
                if delay:
                    await asyncio.sleep(delay)
                await response.write(event)
                if index == 0 and silence_after_first:
                    await asyncio.sleep(silence_after_first)
            if drop:
                assert request.transport is not None
                # Flushes what was written, then FIN: the chunked body never ends.
                request.transport.close()
                # aiohttp would try to end the body on the closed transport.
                raise asyncio.CancelledError
        except (ConnectionError, ClientConnectionResetError):
            pass
        return response

    async def handle_embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(ReceivedRequest(request.path, dict(request.headers), body))
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"object": "embedding", "index": i, "embedding": [0.25, -0.5, float(i)]} for i in range(len(inputs))]
        tokens = EMBEDDING_TOKENS_PER_INPUT * len(inputs)
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    # --- shared by the endpoints added after chat -------------------------------
    async def _record(self, request: web.Request) -> dict[str, Any]:
        body = await request.json()
        self.requests.append(ReceivedRequest(request.path, dict(request.headers), body))
        return body

    @staticmethod
    def _openai_error(model: str) -> web.Response | None:
        if not model.startswith("fake-error-"):
            return None
        status = int(model.rsplit("-", 1)[1])
        error = {
            "error": {
                "message": f"fake failure {status}",
                "type": "server_error",
                "param": None,
                "code": f"fake_{status}",
            }
        }
        return web.json_response(error, status=status)

    async def _stream(self, request: web.Request, events: list[bytes], delay: float = 0) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        try:
            for event in events:
                await response.write(event)
                if delay:
                    await asyncio.sleep(delay)
        except (ConnectionError, ClientConnectionResetError, asyncio.CancelledError):
            self.disconnects += 1
            raise
        return response

    @staticmethod
    def _named_event(data: dict[str, Any]) -> bytes:
        """Anthropic and the Responses API name each event after its type."""
        return b"event: " + data["type"].encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    # --- legacy completions -------------------------------------------------------
    def text_completion(self, model: str, choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> bytes:
        body: dict[str, Any] = {
            "id": "cmpl-fake",
            "object": "text_completion",
            "created": CREATED,
            "model": model,
            "choices": choices,
        }
        if usage is not None:
            body["usage"] = usage
        return orjson.dumps(body)

    async def handle_completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        model = str(body.get("model", ""))
        if (error := self._openai_error(model)) is not None:
            return error
        prompts = body.get("prompt")
        count = len(prompts) if isinstance(prompts, list) and all(isinstance(p, str) for p in prompts) else 1
        n = len(self.words)
        usage = {
            "prompt_tokens": PROMPT_TOKENS * count,
            "completion_tokens": n * count,
            "total_tokens": (PROMPT_TOKENS + n) * count,
        }
        if not body.get("stream"):
            choices = [
                {"text": " ".join(self.words), "index": i, "logprobs": None, "finish_reason": "stop"}
                for i in range(count)
            ]
            return web.Response(body=self.text_completion(model, choices, usage), content_type="application/json")
        events = []
        for i in range(count):
            for j, word in enumerate(self.words):
                choice = {"text": (" " if j else "") + word, "index": i, "logprobs": None, "finish_reason": None}
                events.append(self.text_completion(model, [choice]))
            events.append(
                self.text_completion(model, [{"text": "", "index": i, "logprobs": None, "finish_reason": "stop"}])
            )
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(self.text_completion(model, [], usage))
        return await self._stream(request, [b"data: " + e + b"\n\n" for e in events] + [b"data: [DONE]\n\n"])

    # --- Responses API ------------------------------------------------------------
    def responses_usage(self, model: str) -> dict[str, Any]:
        chat = self.usage(model)
        details = chat.get("completion_tokens_details", {})
        return {
            "input_tokens": chat["prompt_tokens"],
            "input_tokens_details": {"cached_tokens": chat.get("prompt_tokens_details", {}).get("cached_tokens", 0)},
            "output_tokens": chat["completion_tokens"],
            "output_tokens_details": {"reasoning_tokens": details.get("reasoning_tokens", 0)},
            "total_tokens": chat["total_tokens"],
        }

    def response(self, model: str, *, completed: bool) -> dict[str, Any]:
        output_text = {"type": "output_text", "text": " ".join(self.words), "annotations": []}
        message = {
            "type": "message",
            "id": "msg_fake",
            "status": "completed",
            "role": "assistant",
            "content": [output_text],
        }
        return {
            "id": "resp_fake",
            "object": "response",
            "created_at": CREATED,
            "model": model,
            "status": "completed" if completed else "in_progress",
            "error": None,
            "incomplete_details": None,
            "instructions": None,
            "metadata": {},
            "parallel_tool_calls": True,
            "temperature": 1.0,
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "output": [message] if completed else [],
            "usage": self.responses_usage(model) if completed else None,
        }

    def response_events(self, model: str) -> list[dict[str, Any]]:
        text = " ".join(self.words)
        item = {"type": "message", "id": "msg_fake", "status": "in_progress", "role": "assistant", "content": []}
        part = {"type": "output_text", "text": "", "annotations": []}
        at = {"item_id": "msg_fake", "output_index": 0, "content_index": 0}
        done = self.response(model, completed=True)
        events: list[dict[str, Any]] = [
            {"type": "response.created", "response": self.response(model, completed=False)},
            {"type": "response.in_progress", "response": self.response(model, completed=False)},
            {"type": "response.output_item.added", "output_index": 0, "item": item},
            {"type": "response.content_part.added", **at, "part": part},
        ]
        events += [
            {"type": "response.output_text.delta", **at, "delta": (" " if i else "") + w, "logprobs": []}
            for i, w in enumerate(self.words)
        ]
        events += [
            {"type": "response.output_text.done", **at, "text": text, "logprobs": []},
            {"type": "response.content_part.done", **at, "part": {**part, "text": text}},
            {"type": "response.output_item.done", "output_index": 0, "item": done["output"][0]},
            {"type": "response.completed", "response": done},
        ]
        return [{**event, "sequence_number": i} for i, event in enumerate(events)]

    async def handle_responses(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        model = str(body.get("model", ""))
        if (error := self._openai_error(model)) is not None:
            return error
        if not body.get("stream"):
            return web.json_response(self.response(model, completed=True))
        return await self._stream(request, [self._named_event(e) for e in self.response_events(model)])

    # --- Anthropic Messages -------------------------------------------------------
    def messages_usage(self, model: str, output_tokens: int) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "input_tokens": PROMPT_TOKENS,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        }
        if "fake-cached" in model:
            usage.update(ANTHROPIC_CACHED_USAGE)
        return {**usage, "output_tokens": output_tokens, "service_tier": "standard"}

    def message(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        if _wants_tool_use(body):
            block = {"type": "tool_use", "id": "toolu_fake", "name": body["tools"][0]["name"], "input": TOOL_USE_INPUT}
            content, stop_reason, output_tokens = [block], "tool_use", TOOL_USE_OUTPUT_TOKENS
        else:
            text = {"type": "text", "text": " ".join(self.words)}
            content, stop_reason, output_tokens = [text], "end_turn", len(self.words)
        return {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": self.messages_usage(model, output_tokens),
        }

    def message_events(self, message: dict[str, Any], pieces: list[str] | None = None) -> list[dict[str, Any]]:
        usage = message["usage"]
        start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
        events: list[dict[str, Any]] = [{"type": "message_start", "message": start}, {"type": "ping"}]
        for index, block in enumerate(message["content"]):
            if block["type"] == "tool_use":
                opening = {**block, "input": {}}
                deltas = [{"type": "input_json_delta", "partial_json": piece} for piece in TOOL_USE_JSON_PIECES]
            else:
                opening = {"type": "text", "text": ""}
                texts = pieces if pieces is not None else [(" " if i else "") + w for i, w in enumerate(self.words)]
                deltas = [{"type": "text_delta", "text": text} for text in texts]
            events.append({"type": "content_block_start", "index": index, "content_block": opening})
            events += [{"type": "content_block_delta", "index": index, "delta": delta} for delta in deltas]
            events.append({"type": "content_block_stop", "index": index})
        delta = {"stop_reason": message["stop_reason"], "stop_sequence": None}
        events.append(
            {"type": "message_delta", "delta": delta, "usage": {k: v for k, v in usage.items() if k != "service_tier"}}
        )
        events.append({"type": "message_stop"})
        return events

    async def handle_messages(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        model = str(body.get("model", ""))
        if (refusal := _anthropic_refusal(request, body, model)) is not None:
            return refusal
        if "fake-hang" in model:
            assert self._release is not None
            await self._release.wait()  # until stop(): the client must give up first
        message = self.message(model, body)
        pieces = _echo_pieces(body) if "fake-echo" in model else None
        if pieces is not None:
            message["content"] = [{"type": "text", "text": "".join(pieces)}]
        if not body.get("stream"):
            return web.json_response(message, headers={"request-id": "req_fake"})
        delay = self.slow_delay if "fake-slow" in model else 0
        events = self.message_events(message, pieces)
        return await self._stream(request, [self._named_event(e) for e in events], delay)

    async def handle_count_tokens(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        missing = _anthropic_header_refusal(request)
        if missing is not None:
            return missing
        prompt = [body.get("system"), body.get("messages"), body.get("tools")]
        counted = orjson.dumps(prompt, option=orjson.OPT_SORT_KEYS)
        return web.json_response({"input_tokens": len(counted) // 4 + 1})

    async def handle_missing(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response({"detail": "Not Found"}, status=404)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.handle_chat)
        app.router.add_post("/v1/embeddings", self.handle_embeddings)
        app.router.add_post(f"{CHAT_ONLY_PREFIX}/v1/chat/completions", self.handle_chat)
        app.router.add_post(f"{CHAT_ONLY_PREFIX}/v1/embeddings", self.handle_embeddings)
        app.router.add_post(f"{CHAT_ONLY_PREFIX}/v1/responses", self.handle_missing)
        app.router.add_post(f"{CHAT_ONLY_PREFIX}/v1/completions", self.handle_missing)
        app.router.add_post("/v1/completions", self.handle_completions)
        app.router.add_post("/v1/responses", self.handle_responses)
        app.router.add_post("/v1/messages", self.handle_messages)
        app.router.add_post("/v1/messages/count_tokens", self.handle_count_tokens)
        return app

    # --- running --------------------------------------------------------------
    def _serving(self) -> None:
        self._release = asyncio.Event()  # what `fake-hang` handlers wait on

    def _stopping(self) -> None:
        if self._loop is not None and self._release is not None:
            self._loop.call_soon_threadsafe(self._release.set)

    def wait_for_disconnects(self, count: int, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while self.disconnects < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.disconnects >= count


def _seconds_suffix(model: str) -> float:
    """The seconds a fault's name ends with (`fake-silent-2.5`: 2.5)."""
    return float(model.rsplit("-", 1)[1])


def _last_user_text(body: dict[str, Any]) -> str:
    """The content of the last user message: a flaky model's marker."""
    users = [m for m in body.get("messages") or () if isinstance(m, dict) and m.get("role") == "user"]
    content = users[-1].get("content") if users else ""
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


def _echo_pieces(body: dict[str, Any]) -> list[str]:
    """A `fake-echo` answer: the last user message, one stream event per
    piece between `|` (the JSON answer joins them)."""
    return _last_user_text(body).split("|")


def _anthropic_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    kind = _ANTHROPIC_ERROR_TYPES.get(status, "api_error")
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_fake"}
    return web.json_response(body, status=status, headers={"request-id": "req_fake", **(headers or {})})


def _anthropic_header_refusal(request: web.Request) -> web.Response | None:
    # The real API also takes `Authorization: Bearer` (recent SDKs send their
    # api_key that way); only a request with neither is unauthenticated.
    if not request.headers.get("x-api-key") and not request.headers.get("Authorization", "").startswith("Bearer "):
        return _anthropic_error(401, "x-api-key header is required")
    if not request.headers.get("anthropic-version"):
        return _anthropic_error(400, "anthropic-version: header is required")
    return None


def _anthropic_refusal(request: web.Request, body: dict[str, Any], model: str) -> web.Response | None:
    if (missing := _anthropic_header_refusal(request)) is not None:
        return missing
    if model.startswith("claude-error-"):
        status = int(model.rsplit("-", 1)[1])
        headers = {"retry-after": "7"} if status in (429, 529) else {}
        return _anthropic_error(status, f"fake failure {status} for key sk-upstreamsecret123", headers)
    if not isinstance(body.get("max_tokens"), int):
        return _anthropic_error(400, "max_tokens: Field required")
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        return _anthropic_error(400, "messages: at least one message is required")
    return None


def _wants_tool_use(body: dict[str, Any]) -> bool:
    """Call a tool unless the conversation just returned a tool's result."""
    if not body.get("tools"):
        return False
    users = [m for m in body.get("messages") or () if isinstance(m, dict) and m.get("role") == "user"]
    content = users[-1].get("content") if users else None
    blocks = content if isinstance(content, list) else []
    return not any(isinstance(b, dict) and b.get("type") == "tool_result" for b in blocks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument(
        "--slow-delay",
        type=float,
        default=FakeUpstream.slow_delay,
        help="Seconds between the chunks of a fake-slow stream.",
    )
    args = parser.parse_args()
    fake = FakeUpstream(port=args.port, slow_delay=args.slow_delay)
    fake._release = asyncio.Event()
    # The benchmark would otherwise keep every request in memory.
    fake.requests = _Discard()
    web.run_app(fake.app(), host="127.0.0.1", port=args.port, access_log=None, print=None)


class _Discard(list):
    def append(self, item: Any) -> None:
        pass


if __name__ == "__main__":
    main()
