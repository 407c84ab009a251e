"""OpenAI's audio endpoints: OpenAI's envelope, never translated; proxy.media
parses them and proxy.media_relay writes their streams (imported with the
first media request)."""

from collections.abc import Mapping

from proxy.apis.spec import DialectSpec, Parser
from proxy.apis.texts import ApiTexts, entries, string
from proxy.dialects import ClientCall, Dialect


def _audio(dialect: Dialect) -> Parser:
    def parse(raw: bytes, headers: Mapping[str, str], query: str) -> ClientCall:
        from proxy import media

        return media.audio_call(raw, headers.get("content-type", ""), dialect)

    return parse


def _speech(raw: bytes, headers: Mapping[str, str], query: str) -> ClientCall:
    from proxy import media

    return media.speech_call(raw)


# A transcription's prompt, and its text in json and verbose_json answers
# (text formats are not read).
_TRANSCRIBED = ApiTexts(
    request=lambda body: list(string(body, "prompt")), answer=lambda body: list(string(body, "text"))
)
# The text to speak, and how; the answer is audio.
_SPOKEN = ApiTexts(
    request=lambda body: [*string(body, "input"), *string(body, "instructions")],
    turns=lambda body: entries(body, "input"),
)
TRANSCRIPTIONS = DialectSpec(
    Dialect.TRANSCRIPTIONS,
    ("/v1/audio/transcriptions",),
    _audio(Dialect.TRANSCRIPTIONS),
    texts=_TRANSCRIBED,
    provider_in_path=False,
)
TRANSLATIONS = DialectSpec(
    Dialect.TRANSLATIONS,
    ("/v1/audio/translations",),
    _audio(Dialect.TRANSLATIONS),
    texts=_TRANSCRIBED,
    provider_in_path=False,
)
SPEECH = DialectSpec(Dialect.SPEECH, ("/v1/audio/speech",), _speech, texts=_SPOKEN, provider_in_path=False)
