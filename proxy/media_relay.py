"""The media endpoints' streams: speech relayed as the audio arrives, and
transcription streams watched for their usage (proxy.media)."""

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
from django.http import StreamingHttpResponse

from gateway.kernel.context import Usage
from gateway.kernel.sse import SSESplitter, event_data
from proxy.dialects import ClientCall
from proxy.media import MediaCall, audio_usage, image_usage, speech_usage
from proxy.providers.base import token_count
from proxy.stream_end import INTERRUPTED, RecordedStreamingResponse, stream_ended
from proxy.usage import UsageRecorder

_SSE = "text/event-stream"


class TranscriptObserver:
    """A transcription stream (gpt-4o-transcribe, `stream=true`): its usage
    comes in `transcript.text.done`; a stream cut before it is billed the
    upload's duration once an event came (none came: nothing was done)."""

    __slots__ = ("media", "usage", "output_chars", "finished")

    def __init__(self, media: MediaCall) -> None:
        self.media = media
        self.usage: Usage | None = None
        self.output_chars = 0
        self.finished = False

    def observe(self, data: bytes) -> bool:
        event = _event(data)
        if self.usage is None:
            self.usage = audio_usage(None, self.media)
        if event.get("type") == "transcript.text.delta" and isinstance(event.get("delta"), str):
            self.output_chars += len(event["delta"])
        elif event.get("type") == "transcript.text.done":
            self.usage = audio_usage(event, self.media)
            self.finished = True
        return True


def transcript_observer(call: ClientCall) -> TranscriptObserver:
    return TranscriptObserver(call.media)


class ImageStreamObserver:
    """Streamed images (gpt-image-1's `stream=true`): each
    `image_generation.completed` / `image_edit.completed` event is one image
    and carries its tokens. Billed by those tokens at the model's price (whose
    per-image rate, if any, LiteLLM keeps on the size-named rows instead);
    images that came without tokens, per image at the model's price."""

    __slots__ = ("tokens", "images", "output_chars", "finished")

    def __init__(self) -> None:
        self.tokens: Usage | None = None
        self.images = 0
        self.output_chars = 0
        self.finished = False

    @property
    def usage(self) -> Usage | None:
        if self.tokens is not None:
            return self.tokens
        return Usage(output_images=self.images) if self.images else None

    def observe(self, data: bytes) -> bool:
        event = _event(data)
        if event.get("type") in ("image_generation.completed", "image_edit.completed"):
            self.images += 1
            self.finished = True
            if isinstance(event.get("usage"), dict):
                made = image_usage({"usage": event["usage"], "data": [event]}, None)
                self.tokens = made if self.tokens is None else _sum(self.tokens, made)
        return True


def image_stream_observer(call: ClientCall) -> ImageStreamObserver:
    return ImageStreamObserver()


def _sum(a: Usage, b: Usage) -> Usage:
    return Usage(**{name: getattr(a, name) + getattr(b, name) for name in Usage.__dataclass_fields__})


class SpeechObserver:
    """What a speech answer is billed once its audio started (an error or a
    refusal is not): its characters, and the tokens a `stream_format=sse`
    answer reports in `speech.audio.done`."""

    __slots__ = ("media", "reported", "started", "output_chars", "finished")

    def __init__(self, media: MediaCall) -> None:
        self.media = media
        self.reported: Usage | None = None
        self.started = False
        self.output_chars = 0
        self.finished = False

    @property
    def usage(self) -> Usage | None:
        return speech_usage(self.reported, self.media) if self.started else None

    def observe(self, data: bytes) -> bool:
        event = _event(data)
        usage = event.get("usage") if event.get("type") == "speech.audio.done" else None
        if isinstance(usage, dict):  # text in, audio out
            self.reported = Usage(
                input_tokens=token_count(usage.get("input_tokens")),
                audio_output_tokens=token_count(usage.get("output_tokens")),
            )
        return True


def speech_observer(call: ClientCall) -> SpeechObserver:
    return SpeechObserver(call.media)


def speech_relay(response: aiohttp.ClientResponse, recorder: UsageRecorder) -> StreamingHttpResponse:
    """How a speech answer reaches the client: as it arrives."""
    return SpeechResponse(response, recorder)


class SpeechResponse(RecordedStreamingResponse):
    """The upstream's audio bytes, relayed as they come, never held; recorded
    once however it ends (even when the client leaves before the first byte
    is asked for). The recorder's observer (SpeechObserver) says what it costs."""

    def __init__(self, response: aiohttp.ClientResponse, recorder: UsageRecorder) -> None:
        content_type = response.headers.get("Content-Type", "application/octet-stream")
        super().__init__(_relayed(response, recorder), response, recorder, content_type)


async def _relayed(response: aiohttp.ClientResponse, recorder: UsageRecorder) -> AsyncIterator[bytes]:
    # stream_format=sse: the events pass as they are; the observer reads the last one's tokens.
    splitter = SSESplitter() if response.content_type == _SSE else None
    observer = recorder.observer
    if isinstance(observer, SpeechObserver):
        observer.started = True  # the provider answered 200: the characters are spoken
    completed, error_code = False, ""
    try:
        async for chunk in response.content.iter_any():
            recorder.first_token()
            if splitter is not None and observer is not None:
                for event in splitter.feed(chunk):
                    data = event_data(event)
                    if data is not None:
                        observer.observe(data)
            yield chunk
        completed = True
    except (TimeoutError, aiohttp.ClientError):
        error_code = INTERRUPTED  # audio has no room for an error event: the stream just ends
    finally:
        stream_ended(response, recorder, completed, error_code)  # a shutdown's cut is told apart there


def _event(data: bytes) -> dict[str, Any]:
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        return {}
    return event if isinstance(event, dict) else {}
