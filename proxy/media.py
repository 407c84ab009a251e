"""The media endpoints as dialects: audio transcriptions and translations,
speech, image generations and edits.

Each parses into a `ClientCall` like any other dialect, carrying a
`MediaCall` with what metering needs, and walks the same pipeline
(proxy.pipeline: route, limits, guardrails, budget, forward, record). Here
is what differs: the upstream request (multipart bodies re-sent as slices
of the client's, proxy.multipart), the worst case a budget reserves, and
the usage read from the answer.

Metering, by the provider's convention and LiteLLM's price fields:
- audio in, per second (input_cost_per_second): the duration the upstream
  reports (`usage.seconds`, or verbose_json's `duration`); failing that, a
  WAV upload's own header; failing that, the upload's size at
  PROXY_AUDIO_NOMINAL_BYTES_PER_SECOND. A model that reports tokens
  (gpt-4o-transcribe) is billed by its tokens instead.
- speech, per character of `input` (input_cost_per_character), plus tokens
  when the upstream reports them (gpt-4o-mini-tts with stream_format=sse).
- images, per image at the size and quality made (output_cost_per_image,
  LiteLLM's "hd/1024-x-1024/dall-e-3" rows), or by tokens when the upstream
  reports them (gpt-image-1).
"""

import enum
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
from django.conf import settings

from billing.media_pricing import SCALE, image_price, media_cost_scaled
from billing.pricing import worst_case_cost_nanos
from gateway.kernel.context import PriceSnapshot, RouteTarget, Usage
from gateway.kernel.errors import GatewayError, invalid_request
from proxy.dialects import MODEL_NAME_MAX, ClientCall, Dialect, json_object_with_model
from proxy.multipart import Form, form_parse
from proxy.providers.base import UpstreamRequest, token_count

# Tokens an image can take at most (gpt-image-1 at high quality, 1536x1024,
# is 6,240), and audio tokens a second of input can take: the worst case
# of a model billed by tokens.
IMAGE_OUTPUT_TOKENS_MAX = 8192
AUDIO_TOKENS_PER_SECOND_MAX = 20
SPEECH_INPUT_MAX = 4096  # characters: OpenAI's own limit on `input`
PATHS = {
    Dialect.TRANSCRIPTIONS: "audio/transcriptions",
    Dialect.TRANSLATIONS: "audio/translations",
    Dialect.SPEECH: "audio/speech",
    Dialect.IMAGES: "images/generations",
    Dialect.IMAGE_EDITS: "images/edits",
}


class MediaKind(enum.Enum):
    AUDIO_IN = "audio_in"
    SPEECH = "speech"
    IMAGE = "image"


@dataclass(frozen=True, slots=True)
class MediaCall:
    """What the budget and the meter need to know of a media request."""

    kind: MediaKind
    form: Form | None = None  # a multipart request's body and parts
    upload_bytes: int = 0  # the audio or images sent
    uploads: int = 0  # files sent (the images to edit)
    audio_ms: int | None = None  # the upload's duration, when its header says (WAV)
    characters: int = 0  # speech input
    images: int = 0  # asked for (`n`)
    size: str | None = None
    quality: str | None = None


# --- parsing (the dialects' parse step) ---------------------------------------------


def audio_call(raw: bytes, content_type: str, dialect: Dialect) -> ClientCall:
    """/v1/audio/transcriptions and /v1/audio/translations: a file and a model."""
    form = form_parse(raw, content_type)
    fields = form.fields()
    _model_field(fields)
    files = form.files("file")
    if not files:
        raise GatewayError(400, "missing_file", "'file' is required: the audio to transcribe.", param="file")
    audio = raw[files[0].start : files[0].end]
    stream = fields.get("stream", "").lower() == "true"
    media = MediaCall(MediaKind.AUDIO_IN, form, upload_bytes=len(audio), uploads=1, audio_ms=wav_duration_ms(audio))
    return ClientCall(dialect, fields, _text_bytes(form), stream, media=media)


def speech_call(raw: bytes) -> ClientCall:
    """/v1/audio/speech: JSON with the text in `input`."""
    body = json_object_with_model(raw, "speech request")
    text = body.get("input")
    if not isinstance(text, str) or not text:
        raise invalid_request("'input' is required: the text to speak.", param="input")
    if len(text) > SPEECH_INPUT_MAX:
        raise invalid_request(f"'input' must be at most {SPEECH_INPUT_MAX} characters.", param="input")
    media = MediaCall(MediaKind.SPEECH, characters=len(text))
    return ClientCall(Dialect.SPEECH, body, len(raw), body.get("stream_format") == "sse", media=media)


def image_generation_call(raw: bytes) -> ClientCall:
    """/v1/images/generations: JSON with a prompt."""
    body = json_object_with_model(raw, "image generation request")
    if not isinstance(body.get("prompt"), str) or not body["prompt"]:
        raise invalid_request("'prompt' is required: a description of the image.", param="prompt")
    return ClientCall(Dialect.IMAGES, body, len(raw), body.get("stream") is True, media=_image_media(body, None))


def image_edit_call(raw: bytes, content_type: str) -> ClientCall:
    """/v1/images/edits: multipart, the image(s) to edit and a prompt."""
    form = form_parse(raw, content_type)
    fields = form.fields()
    _model_field(fields)
    images = form.files("image", "image[]")
    if not images:
        raise GatewayError(400, "missing_file", "'image' is required: the image to edit.", param="image")
    if not fields.get("prompt"):
        raise invalid_request("'prompt' is required: a description of the edit.", param="prompt")
    body: dict[str, Any] = dict(fields)
    media = replace(_image_media(body, form), uploads=len(form.files("image", "image[]", "mask")))
    stream = fields.get("stream", "").lower() == "true"
    return ClientCall(Dialect.IMAGE_EDITS, body, _text_bytes(form), stream, media=media)


def _model_field(fields: dict[str, str]) -> None:
    model = fields.get("model", "").strip()
    if not model:
        raise invalid_request("'model' is required and must be a non-empty string.", param="model")
    if len(model) > MODEL_NAME_MAX or not model.isprintable():
        raise invalid_request(f"'model' must be at most {MODEL_NAME_MAX} printable characters.", param="model")
    fields["model"] = model


def _text_bytes(form: Form) -> int:
    """A multipart call's size as the rate limits and budgets count text:
    its fields, not its files (audio and images are metered on their own)."""
    return len(form.body) - sum(p.end - p.start for p in form.parts if p.filename is not None)


def _image_media(body: dict[str, Any], form: Form | None) -> MediaCall:
    n = 1 if body.get("n") is None else body["n"]
    try:
        images = int(n)  # a form field is text
    except (TypeError, ValueError):
        images = 0
    if isinstance(n, bool) or not 1 <= images <= 10:
        raise invalid_request("'n' must be an integer from 1 to 10.", param="n")
    size, quality = body.get("size"), body.get("quality")
    return MediaCall(
        MediaKind.IMAGE,
        form,
        upload_bytes=0 if form is None else len(form.body) - _text_bytes(form),
        images=images,
        size=size if isinstance(size, str) else None,
        quality=quality if isinstance(quality, str) else None,
    )


def wav_duration_ms(audio: bytes) -> int | None:
    """A WAV file's duration from its header (RIFF `fmt ` byte rate and
    `data` size), rounded up; None for anything else. Reads a few bytes."""
    if len(audio) < 12 or audio[:4] != b"RIFF" or audio[8:12] != b"WAVE":
        return None
    pos, byte_rate = 12, 0
    while pos + 8 <= len(audio):
        chunk, size = audio[pos : pos + 4], struct.unpack_from("<I", audio, pos + 4)[0]
        if chunk == b"fmt " and size >= 12 and pos + 20 <= len(audio):
            byte_rate = struct.unpack_from("<I", audio, pos + 16)[0]
        elif chunk == b"data":
            if not byte_rate:
                return None
            size = min(size, len(audio) - pos - 8)  # a streamed WAV says 0xFFFFFFFF
            return -(-size * 1000 // byte_rate)
        pos += 8 + size + (size & 1)
    return None


# --- the upstream request (the forward step) ------------------------------------------


def media_request(call: ClientCall, target: RouteTarget, headers: dict[str, str], url: str) -> UpstreamRequest:
    """The upstream request: JSON with `model` replaced, or the client's
    multipart form with `model` (and any redacted text field) rewritten."""
    media: MediaCall = call.media
    if media.form is None:
        return UpstreamRequest(url, headers, orjson.dumps({**call.body, "model": target.upstream_model}))
    values = {**call.body, "model": target.upstream_model}
    body = media.form.rewritten({k: v for k, v in values.items() if isinstance(v, str)})
    headers = {**headers, "Content-Type": body.content_type}
    return UpstreamRequest(url, headers, body)  # type: ignore[arg-type]  # an aiohttp payload, sent as slices


def usage_reader(call: ClientCall) -> Callable[[Any], Usage]:
    """The answer's usage, for the forward step's `usage_from_json`."""
    media: MediaCall = call.media
    if media.kind is MediaKind.AUDIO_IN:
        return lambda answer: audio_usage(answer, media)
    if media.kind is MediaKind.SPEECH:
        return lambda answer: speech_usage(None, media)
    return lambda answer: image_usage(answer, media)


def audio_usage(answer: Any, media: MediaCall) -> Usage:
    """Tokens when reported (gpt-4o-transcribe); else the duration: the
    upstream's, the WAV header's, or the size at the nominal rate."""
    usage = answer.get("usage") if isinstance(answer, dict) else None
    if isinstance(usage, dict) and usage.get("type") == "tokens":
        details = usage.get("input_token_details")
        details = details if isinstance(details, dict) else {}
        audio = token_count(details.get("audio_tokens"))
        text = token_count(details["text_tokens"]) if "text_tokens" in details else None
        total_in = token_count(usage.get("input_tokens"))
        return Usage(
            input_tokens=text if text is not None else max(total_in - audio, 0),
            audio_input_tokens=audio,
            output_tokens=token_count(usage.get("output_tokens")),
        )
    return Usage(audio_input_ms=_reported_ms(answer) or media.audio_ms or nominal_ms(media.upload_bytes))


def _reported_ms(answer: Any) -> int | None:
    if not isinstance(answer, dict):
        return None
    usage = answer.get("usage")
    seconds = usage.get("seconds") if isinstance(usage, dict) and usage.get("type") == "duration" else None
    if seconds is None:
        seconds = answer.get("duration")  # verbose_json
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float, str)):
        return None
    try:
        value = Decimal(str(seconds))  # the float's shortest repr, never its binary expansion
    except InvalidOperation:
        return None
    return math.ceil(value * 1000) if value.is_finite() and value > 0 else None


def nominal_ms(upload_bytes: int) -> int:
    """The duration of an upload whose length nobody reported, at the nominal bitrate."""
    return -(-upload_bytes * 1000 // settings.PROXY_AUDIO_NOMINAL_BYTES_PER_SECOND)


def speech_usage(reported: Usage | None, media: MediaCall) -> Usage:
    """Characters always (what tts-1 charges), plus the tokens a stream reported."""
    return replace(reported or Usage(), input_characters=media.characters)


def image_usage(answer: Any, media: MediaCall | None) -> Usage:
    """Images made, and gpt-image-1's tokens when it reports them."""
    data = answer.get("data") if isinstance(answer, dict) else None
    images = len(data) if isinstance(data, list) else 0
    usage = answer.get("usage") if isinstance(answer, dict) else None
    if not isinstance(usage, dict):
        return Usage(output_images=images)
    into = usage.get("input_tokens_details")
    into = into if isinstance(into, dict) else {}
    out = usage.get("output_tokens_details")
    out = out if isinstance(out, dict) else {}
    image_in = token_count(into.get("image_tokens"))
    output = token_count(usage.get("output_tokens"))
    # gpt-image-1 reports its output as image tokens without details; gpt-image-1.5 splits them.
    image_out = token_count(out["image_tokens"]) if "image_tokens" in out else output
    return Usage(
        input_tokens=max(token_count(usage.get("input_tokens")) - image_in, 0),
        image_input_tokens=image_in,
        output_tokens=max(output - image_out, 0),
        image_output_tokens=image_out,
        output_images=images,
    )


def answer_price(call: ClientCall, target: RouteTarget) -> Callable[[Any], PriceSnapshot | None]:
    """The price an image answer is billed at: the model's token price when
    the upstream reported tokens, else that of the size and quality made
    (as the answer says them, else as asked)."""

    def price(answer: Any) -> PriceSnapshot | None:
        media: MediaCall = call.media
        if isinstance(answer, dict) and isinstance(answer.get("usage"), dict) and target.price is not None:
            return replace(target.price, media=replace(target.price.media, per_image=None))
        made = answer if isinstance(answer, dict) else {}
        size = made.get("size") if isinstance(made.get("size"), str) else media.size
        quality = made.get("quality") if isinstance(made.get("quality"), str) else media.quality
        return image_price(target.price, size, quality) or target.price

    return price


# --- the budget's worst case (the reserve step) --------------------------------------


def worst_case_nanos(media: MediaCall, price: PriceSnapshot | None, *, request_bytes: int, output_tokens: int) -> int:
    """The most this media request can cost: every bucket it may be billed
    in at the dearest rate that can apply (see the module docstring)."""
    if price is None:
        return 0
    if media.kind is MediaKind.IMAGE:
        one = image_price(price, media.size, media.quality)
        per_image = 0 if one is None else (one.media.per_image or 0)
        # Text tokens are bounded by the text's bytes; an image sent to edit counts as much as one made.
        prompt = request_bytes + media.uploads * IMAGE_OUTPUT_TOKENS_MAX
        outputs = media.images * IMAGE_OUTPUT_TOKENS_MAX
        return worst_case_cost_nanos(price, prompt_tokens=prompt, output_tokens=outputs) + media.images * per_image
    if media.kind is MediaKind.SPEECH:
        tokens = worst_case_cost_nanos(price, prompt_tokens=request_bytes, output_tokens=output_tokens)
        return tokens + _rounded_up(media_cost_scaled(Usage(input_characters=media.characters), price.media))
    ms = audio_ms_worst(media)
    prompt = -(-ms // 1000) * AUDIO_TOKENS_PER_SECOND_MAX + request_bytes
    tokens = worst_case_cost_nanos(price, prompt_tokens=prompt, output_tokens=output_tokens)
    return tokens + _rounded_up(media_cost_scaled(Usage(audio_input_ms=ms), price.media))


def audio_ms_worst(media: MediaCall) -> int:
    """The longest the upload can be: its header's duration, else its size
    at the lowest bitrate (PROXY_AUDIO_MIN_BYTES_PER_SECOND), capped by
    PROXY_AUDIO_MAX_SECONDS when that is set."""
    if media.audio_ms is not None:
        return media.audio_ms
    ms = -(-media.upload_bytes * 1000 // settings.PROXY_AUDIO_MIN_BYTES_PER_SECOND)
    cap = settings.PROXY_AUDIO_MAX_SECONDS
    return min(ms, cap * 1000) if cap else ms


def _rounded_up(scaled: int) -> int:
    return -(-scaled // SCALE)
