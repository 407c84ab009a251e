"""The media endpoints' streams: speech relayed as the audio arrives, and
transcription streams watched for their usage (proxy.media)."""

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
from django.http import StreamingHttpResponse

from gateway.kernel.context import Usage
from gateway.kernel.sse import SSESplitter, event_data
from proxy.dialects import ClientCall
from proxy.media import MediaCall, audio_usage, speech_usage
from proxy.providers.base import token_count
from proxy.streaming import INTERRUPTED
from proxy.usage import UsageRecorder

_SSE = "text/event-stream"


class TranscriptObserver:
    """A transcription stream (gpt-4o-transcribe, `stream=true`): its usage
    comes in `transcript.text.done`; until then the upload's duration stands."""

    __slots__ = ("media", "usage", "output_chars", "finished")

    def __init__(self, media: MediaCall) -> None:
        self.media = media
        self.usage: Usage | None = audio_usage(None, media)
        self.output_chars = 0
        self.finished = False

    def observe(self, data: bytes) -> bool:
        event = _event(data)
        if event.get("type") == "transcript.text.delta" and isinstance(event.get("delta"), str):
            self.output_chars += len(event["delta"])
        elif event.get("type") == "transcript.text.done":
            self.usage = audio_usage(event, self.media)
            self.finished = True
        return True


def transcript_observer(call: ClientCall) -> TranscriptObserver:
    return TranscriptObserver(call.media)


def speech_relay(call: ClientCall) -> Callable[[aiohttp.ClientResponse, UsageRecorder], StreamingHttpResponse]:
    """How a speech answer reaches the client: as it arrives."""
    return lambda response, recorder: SpeechResponse(response, recorder, call.media)


class SpeechResponse(StreamingHttpResponse):
    """The upstream's audio bytes, relayed as they come, never held; recorded
    once however it ends (and, like proxy.streaming.RelayResponse, even when
    the client leaves before the first byte is asked for)."""

    def __init__(self, response: aiohttp.ClientResponse, recorder: UsageRecorder, media: MediaCall) -> None:
        super().__init__(
            _relayed(response, recorder, media),
            content_type=response.headers.get("Content-Type", "application/octet-stream"),
        )
        self["Cache-Control"] = "no-cache"
        self["X-Accel-Buffering"] = "no"
        self._upstream, self._recorder, self._media = response, recorder, media
        self._loop = asyncio.get_running_loop()

    def close(self) -> None:
        try:
            if not self._recorder.recorded:
                self._loop.call_soon_threadsafe(self._abandon)
        finally:
            super().close()

    def _abandon(self) -> None:
        if not self._recorder.recorded:
            self._upstream.close()
            usage = speech_usage(None, self._media)
            self._recorder.finish(status=200, usage=usage, error_code="client_disconnected", client_disconnected=True)


async def _relayed(response: aiohttp.ClientResponse, recorder: UsageRecorder, media: MediaCall) -> AsyncIterator[bytes]:
    # stream_format=sse: the events pass as they are; the last one carries the tokens.
    splitter = SSESplitter() if response.content_type == _SSE else None
    reported: Usage | None = None
    completed, error_code = False, ""
    try:
        async for chunk in response.content.iter_any():
            recorder.first_token()
            for event in splitter.feed(chunk) if splitter is not None else ():
                reported = _speech_tokens(event_data(event)) or reported
            yield chunk
        completed = True
    except (TimeoutError, aiohttp.ClientError):
        error_code = INTERRUPTED  # audio has no room for an error event: the stream just ends
    finally:
        if completed:
            response.release()
        else:
            response.close()
        recorder.finish(
            status=200,
            usage=speech_usage(reported, media),
            error_code=error_code or ("" if completed else "client_disconnected"),
            client_disconnected=not completed and not error_code,
        )


def _speech_tokens(data: bytes | None) -> Usage | None:
    """`speech.audio.done`'s usage: text in, audio out."""
    event = _event(data) if data is not None else {}
    usage = event.get("usage") if event.get("type") == "speech.audio.done" else None
    if not isinstance(usage, dict):
        return None
    return Usage(
        input_tokens=token_count(usage.get("input_tokens")), audio_output_tokens=token_count(usage.get("output_tokens"))
    )


def _event(data: bytes) -> dict[str, Any]:
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        return {}
    return event if isinstance(event, dict) else {}
