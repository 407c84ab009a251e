"""A fake realtime provider: OpenAI's Realtime API over WebSocket, as the tests need it.

`GET /v1/realtime?model=...` (OpenAI) and `GET /openai/realtime?api-version=...&deployment=...`
(Azure) upgrade to a WebSocket that speaks the realtime events:

* on connect: `session.created` (its `session.model` is the model asked);
* `session.update` -> `session.updated` with the session so far;
* `conversation.item.create` -> `conversation.item.added` and `conversation.item.done`
  (`conversation.item.created` with `OpenAI-Beta: realtime=v1`);
* `input_audio_buffer.append` (kept), `input_audio_buffer.commit` -> `input_audio_buffer.committed`,
  and a response of its own when the session has turn detection on (as server VAD does);
* `response.create` -> `response.created`, the output as deltas (`response.output_text.delta` per
  word, or for audio `response.output_audio.delta` and `response.output_audio_transcript.delta`;
  `response.text.delta` / `response.audio.delta` in the beta protocol), then `response.done` whose
  `response.usage` is USAGE_TEXT or USAGE_AUDIO (audio when "audio" is among the response's, else
  the session's, `output_modalities`). A response.create while another response is in progress is
  answered with an `error` (`conversation_already_has_active_response`) naming its event_id;
* `response.metadata.fake` picks a behaviour: `slow` (SLOW_DELTAS deltas, `slow_delay` apart),
  `close` (the socket closed with 1011 right after `response.created`), `failed` (a `response.done`
  with status `failed`);
* a binary frame is echoed back as it came.

Every connection is kept in `connections`: its path, query, headers and offered subprotocols,
the events and binary frames it received, and the code it was closed with. `refuse_status`
answers every handshake with that HTTP status instead.
"""

import asyncio
import base64
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from proxy.tests.threaded_server import ThreadServed

WORDS = ("Hello", " from", " the", " fake", " realtime", " model.")
AUDIO_CHUNK = b"\x01\x02" * 240  # 480 bytes of "PCM16"
SLOW_DELTAS = 200
# Realtime usage as OpenAI reports it: cached tokens inside input_tokens, audio inside both
# totals. Disjoint: 20 text input, 14 audio input, 16 cached (10 text, 6 audio), then output.
_INPUT = {
    "input_tokens": 50,
    "input_token_details": {
        "text_tokens": 30,
        "audio_tokens": 20,
        "image_tokens": 0,
        "cached_tokens": 16,
        "cached_tokens_details": {"text_tokens": 10, "audio_tokens": 6, "image_tokens": 0},
    },
}
USAGE_TEXT = {
    **_INPUT,
    "total_tokens": 62,
    "output_tokens": 12,
    "output_token_details": {"text_tokens": 12, "audio_tokens": 0},
}
USAGE_AUDIO = {
    **_INPUT,
    "total_tokens": 102,
    "output_tokens": 52,
    "output_token_details": {"text_tokens": 12, "audio_tokens": 40},
}


@dataclass
class RealtimeConnection:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    protocols: list[str]
    received: list[dict[str, Any]] = field(default_factory=list)
    binary: list[bytes] = field(default_factory=list)
    close_code: int | None = None
    closed: bool = False
    ws: web.WebSocketResponse | None = field(default=None, repr=False)
    session: dict[str, Any] = field(default_factory=dict)
    responding: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def beta(self) -> bool:
        return self.headers.get("openai-beta", "") == "realtime=v1"

    def types(self) -> list[str]:
        return [event.get("type", "") for event in self.received]


class FakeRealtime(ThreadServed):
    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.connections: list[RealtimeConnection] = []
        self.refuse_status: int | None = None
        self.slow_delay = 0.1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/realtime", self.realtime)
        app.router.add_get("/openai/realtime", self.realtime)
        return app

    async def realtime(self, request: web.Request) -> web.StreamResponse:
        if self.refuse_status is not None:
            return web.json_response({"error": {"message": "refused"}}, status=self.refuse_status)
        protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        ws = web.WebSocketResponse(max_msg_size=64 * 1024 * 1024)
        await ws.prepare(request)
        conn = RealtimeConnection(
            path=request.path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            protocols=protocols,
            ws=ws,
            session={"id": "sess_" + uuid.uuid4().hex[:12], "object": "realtime.session", "type": "realtime"},
        )
        conn.session["model"] = conn.query.get("model") or conn.query.get("deployment", "")
        self.connections.append(conn)
        await self._send(conn, {"type": "session.created", "session": conn.session})
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    event = orjson.loads(message.data)
                    conn.received.append(event)
                    await self._event(conn, event)
                elif message.type == WSMsgType.BINARY:
                    conn.binary.append(message.data)
                    await ws.send_bytes(message.data)
        finally:
            if conn.responding is not None:
                conn.responding.cancel()
            conn.close_code = ws.close_code
            conn.closed = True
        return ws

    async def _event(self, conn: RealtimeConnection, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "session.update":
            conn.session.update(event.get("session") or {})
            await self._send(conn, {"type": "session.updated", "session": conn.session})
        elif kind == "conversation.item.create":
            item = {"id": "item_" + uuid.uuid4().hex[:12], **(event.get("item") or {})}
            if conn.beta:
                await self._send(conn, {"type": "conversation.item.created", "item": item})
            else:
                await self._send(conn, {"type": "conversation.item.added", "item": item})
                await self._send(conn, {"type": "conversation.item.done", "item": item})
        elif kind == "input_audio_buffer.commit":
            await self._send(conn, {"type": "input_audio_buffer.committed", "item_id": "item_" + uuid.uuid4().hex[:8]})
            if _turn_detection(conn.session):
                self._respond(conn, {}, "")
        elif kind == "response.create":
            if conn.responding is not None and not conn.responding.done():
                await self._send(conn, _already_responding(event))
            else:
                self._respond(conn, event.get("response") or {}, str(event.get("event_id", "")))

    def _respond(self, conn: RealtimeConnection, params: dict[str, Any], event_id: str) -> None:
        conn.responding = asyncio.get_running_loop().create_task(self._response(conn, params))

    async def _response(self, conn: RealtimeConnection, params: dict[str, Any]) -> None:
        response_id = "resp_" + uuid.uuid4().hex[:12]
        modalities = params.get("output_modalities") or conn.session.get("output_modalities") or ["text"]
        audio = "audio" in modalities
        fake = (params.get("metadata") or {}).get("fake", "")
        response = {"id": response_id, "object": "realtime.response", "status": "in_progress", "output": []}
        await self._send(conn, {"type": "response.created", "response": response})
        if fake == "close":
            assert conn.ws is not None
            await conn.ws.close(code=1011, message=b"upstream went away")
            return
        for i in range(SLOW_DELTAS if fake == "slow" else len(WORDS)):
            if fake == "slow":
                await asyncio.sleep(self.slow_delay)
            await self._delta(conn, response_id, WORDS[i % len(WORDS)], audio)
        done = {
            **response,
            "status": "failed" if fake == "failed" else "completed",
            "usage": USAGE_AUDIO if audio else USAGE_TEXT,
        }
        if fake == "failed":
            done["status_details"] = {"type": "failed", "error": {"type": "server_error", "code": "fake_failure"}}
        await self._send(conn, {"type": "response.done", "response": done})

    async def _delta(self, conn: RealtimeConnection, response_id: str, word: str, audio: bool) -> None:
        ids = {"response_id": response_id, "item_id": "item_out", "output_index": 0, "content_index": 0}
        if audio:
            kind = "response.audio.delta" if conn.beta else "response.output_audio.delta"
            await self._send(conn, {"type": kind, **ids, "delta": base64.b64encode(AUDIO_CHUNK).decode()})
            kind = "response.audio_transcript.delta" if conn.beta else "response.output_audio_transcript.delta"
        else:
            kind = "response.text.delta" if conn.beta else "response.output_text.delta"
        await self._send(conn, {"type": kind, **ids, "delta": word})

    async def _send(self, conn: RealtimeConnection, event: dict[str, Any]) -> None:
        assert conn.ws is not None
        if not conn.ws.closed:
            await conn.ws.send_str(orjson.dumps({"event_id": "event_" + uuid.uuid4().hex[:12], **event}).decode())

    # --- from the test's thread -----------------------------------------------------------
    def close_all(self, code: int = 1000) -> None:
        """Close every open connection from the provider's side."""
        assert self._loop is not None

        async def close() -> None:
            for conn in self.connections:
                if conn.ws is not None and not conn.ws.closed:
                    await conn.ws.close(code=code, message=b"closed by the provider")

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)

    def wait_for(self, condition: Callable[[], Any], timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.02)
        raise AssertionError(f"fake realtime: condition not met in {timeout}s; connections: {self.connections}")


def _turn_detection(session: dict[str, Any]) -> bool:
    """Turn detection on: the beta protocol's `turn_detection`, or GA's `audio.input.turn_detection`."""
    if session.get("turn_detection"):
        return True
    audio = session.get("audio")
    audio_input = audio.get("input") if isinstance(audio, dict) else None
    return isinstance(audio_input, dict) and bool(audio_input.get("turn_detection"))


def _already_responding(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "code": "conversation_already_has_active_response",
            "message": "Conversation already has an active response in progress.",
            "param": None,
            "event_id": event.get("event_id"),
        },
    }
