"""OpenAI's audio endpoints: OpenAI's envelope, never translated; proxy.media
parses them and proxy.media_relay writes their streams (imported with the
first media request)."""

from collections.abc import Mapping

from proxy.apis.spec import DialectSpec, Parser
from proxy.dialects import ClientCall, Dialect


def _audio(dialect: Dialect) -> Parser:
    def parse(raw: bytes, headers: Mapping[str, str], query: str) -> ClientCall:
        from proxy import media

        return media.audio_call(raw, headers.get("content-type", ""), dialect)

    return parse


def _speech(raw: bytes, headers: Mapping[str, str], query: str) -> ClientCall:
    from proxy import media

    return media.speech_call(raw)


TRANSCRIPTIONS = DialectSpec(
    Dialect.TRANSCRIPTIONS, ("/v1/audio/transcriptions",), _audio(Dialect.TRANSCRIPTIONS), provider_in_path=False
)
TRANSLATIONS = DialectSpec(
    Dialect.TRANSLATIONS, ("/v1/audio/translations",), _audio(Dialect.TRANSLATIONS), provider_in_path=False
)
SPEECH = DialectSpec(Dialect.SPEECH, ("/v1/audio/speech",), _speech, provider_in_path=False)
