"""A fake provider of OpenAI's audio and image endpoints, as the media tests need it.

* `POST /v1/audio/transcriptions` and `/v1/audio/translations` (multipart): the text
  TRANSCRIPT, as `response_format` asks: `json` with whisper's `usage` (type `duration`,
  DURATION_SECONDS) or, for the model TOKENS_MODEL, gpt-4o-transcribe's token usage
  (TRANSCRIBE_USAGE); `verbose_json` with `duration` VERBOSE_DURATION; `text`, `srt`, `vtt` as
  plain text with no duration at all; `stream=true`, `transcript.text.delta` events and a
  `transcript.text.done` with TRANSCRIBE_USAGE.
* `POST /v1/audio/speech` (JSON): SPEECH_CHUNKS as audio/mpeg, the first at once and the others
  only once `speech_gate` is set (so a test can see the first bytes arrive before the rest
  exists); `stream_format=sse`, `speech.audio.delta` events and a `speech.audio.done` with
  SPEECH_USAGE.
* `POST /v1/images/generations` (JSON) and `/v1/images/edits` (multipart): `n` images as
  b64_json; the model IMAGE_TOKENS_MODEL answers as gpt-image-1 does, with its `size`,
  `quality` and token usage (IMAGE_USAGE); with `stream`, a partial image and a
  `.completed` event carrying IMAGE_USAGE per image.
* Azure's deployment form of transcriptions and image generations
  (`/openai/deployments/<deployment>/...?api-version=...`);
* a model named `error-400` gets OpenAI's 400 error.

Every request is kept in `requests`: its path, headers, text fields or JSON body, and the bytes
of each file part.
"""

import asyncio
import base64
import threading
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import BodyPartReader, web

from proxy.tests.threaded_server import ThreadServed

TRANSCRIPT = "The quick brown fox jumps over the lazy dog."
DURATION_SECONDS = 9  # whisper-1's json usage: whole seconds
VERBOSE_DURATION = 8.47
TOKENS_MODEL = "gpt-4o-transcribe-up"
TRANSCRIBE_USAGE: dict[str, Any] = {
    "type": "tokens",
    "input_tokens": 120,
    "input_token_details": {"text_tokens": 20, "audio_tokens": 100},
    "output_tokens": 30,
    "total_tokens": 150,
}
SPEECH_CHUNKS = (b"ID3\x04fake-mp3-frame-one", b"\xff\xfb" * 600, b"\xff\xfb-last")
SPEECH_USAGE = {"input_tokens": 14, "output_tokens": 500, "total_tokens": 514}
IMAGE_TOKENS_MODEL = "gpt-image-1-up"
IMAGE_USAGE = {
    "input_tokens": 350,
    "input_tokens_details": {"text_tokens": 50, "image_tokens": 300},
    "output_tokens": 4160,
    "total_tokens": 4510,
}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake-image").decode()


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    fields: dict[str, Any]  # the text fields, or the JSON body
    query: dict[str, str] = field(default_factory=dict)
    files: dict[str, list[bytes]] = field(default_factory=dict)
    filenames: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class FakeMedia(ThreadServed):
    port: int = 0
    requests: list[Received] = field(default_factory=list)
    speech_gate: threading.Event = field(default_factory=threading.Event)
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/audio/transcriptions", self.transcribe)
        app.router.add_post("/v1/audio/translations", self.transcribe)
        app.router.add_post("/v1/audio/speech", self.speech)
        app.router.add_post("/v1/images/generations", self.images)
        app.router.add_post("/v1/images/edits", self.images)
        # Azure OpenAI's deployment form: /openai/deployments/<deployment>/<endpoint>?api-version=...
        app.router.add_post("/openai/deployments/{deployment}/audio/transcriptions", self.transcribe)
        app.router.add_post("/openai/deployments/{deployment}/images/generations", self.images)
        return app

    def last(self, path: str) -> Received:
        return [r for r in self.requests if r.path == path][-1]

    async def _received(self, request: web.Request) -> Received:
        got = Received(request.path, dict(request.headers), {}, query=dict(request.query))
        if request.content_type == "multipart/form-data":
            reader = await request.multipart()
            async for part in reader:
                assert isinstance(part, BodyPartReader)
                name = part.name or ""
                if part.filename is None:
                    got.fields[name] = await part.text()
                else:
                    got.files.setdefault(name, []).append(await part.read())
                    got.filenames.setdefault(name, []).append(part.filename)
        else:
            got.fields = orjson.loads(await request.read())
        self.requests.append(got)
        return got

    async def transcribe(self, request: web.Request) -> web.StreamResponse:
        got = await self._received(request)
        if got.fields.get("model") == "error-400":
            return _error()
        fmt = got.fields.get("response_format", "json")
        if got.fields.get("stream") == "true":
            events: list[dict[str, Any]] = [
                {"type": "transcript.text.delta", "delta": word + " "} for word in TRANSCRIPT.split()
            ]
            events.append({"type": "transcript.text.done", "text": TRANSCRIPT, "usage": TRANSCRIBE_USAGE})
            return await _sse(request, events)
        if fmt in ("text", "srt", "vtt"):
            return web.Response(text=TRANSCRIPT + "\n", content_type="text/plain")
        if fmt == "verbose_json":
            return web.json_response(
                {"task": "transcribe", "language": "english", "duration": VERBOSE_DURATION, "text": TRANSCRIPT}
            )
        if got.fields.get("model") == TOKENS_MODEL:
            return web.json_response({"text": TRANSCRIPT, "usage": TRANSCRIBE_USAGE})
        return web.json_response({"text": TRANSCRIPT, "usage": {"type": "duration", "seconds": DURATION_SECONDS}})

    async def speech(self, request: web.Request) -> web.StreamResponse:
        got = await self._received(request)
        if got.fields.get("model") == "error-400":
            return _error()
        if got.fields.get("stream_format") == "sse":
            events: list[dict[str, Any]] = [
                {"type": "speech.audio.delta", "audio": base64.b64encode(c).decode()} for c in SPEECH_CHUNKS
            ]
            events.append({"type": "speech.audio.done", "usage": SPEECH_USAGE})
            return await _sse(request, events)
        response = web.StreamResponse(headers={"Content-Type": "audio/mpeg"})
        await response.prepare(request)
        await response.write(SPEECH_CHUNKS[0])
        await asyncio.to_thread(self.speech_gate.wait, 20)  # the rest only once the client had the first
        for chunk in SPEECH_CHUNKS[1:]:
            await response.write(chunk)
        await response.write_eof()
        return response

    async def images(self, request: web.Request) -> web.StreamResponse:
        got = await self._received(request)
        if got.fields.get("model") == "error-400":
            return _error()
        n = int(got.fields.get("n", 1))
        if got.fields.get("stream") in (True, "true"):  # gpt-image-1: a partial image, then each one done
            kind = "image_edit" if request.path.endswith("edits") else "image_generation"
            events: list[dict[str, Any]] = []
            for _ in range(n):
                events.append({"type": f"{kind}.partial_image", "b64_json": PNG, "partial_image_index": 0})
                events.append({"type": f"{kind}.completed", "b64_json": PNG, "usage": IMAGE_USAGE})
            return await _sse(request, events)
        answer: dict[str, Any] = {"created": 1700000000, "data": [{"b64_json": PNG} for _ in range(n)]}
        if got.fields.get("model") == IMAGE_TOKENS_MODEL:
            answer.update(size="1024x1024", quality="high", usage=IMAGE_USAGE)
        return web.json_response(answer)

    def _stopping(self) -> None:
        self.speech_gate.set()  # a speech held after its first chunk ends


def _error() -> web.Response:
    body = {
        "error": {"message": "Invalid file format.", "type": "invalid_request_error", "param": "file", "code": None}
    }
    return web.json_response(body, status=400)


async def _sse(request: web.Request, events: list[dict[str, Any]]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for event in events:
        await response.write(b"data: " + orjson.dumps(event) + b"\n\n")
    await response.write_eof()
    return response
