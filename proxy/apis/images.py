"""OpenAI's image endpoints: OpenAI's envelope, never translated; proxy.media
parses them (imported with the first media request)."""

from collections.abc import Mapping

from proxy.apis.spec import DialectSpec
from proxy.apis.texts import ApiTexts, string
from proxy.dialects import ClientCall, Dialect


def _generation(raw: bytes, headers: Mapping[str, str], query: str) -> ClientCall:
    from proxy import media

    return media.image_generation_call(raw)


def _edit(raw: bytes, headers: Mapping[str, str], query: str) -> ClientCall:
    from proxy import media

    return media.image_edit_call(raw, headers.get("content-type", ""))


# The prompt; the answer is images (a revised prompt is not read).
_TEXTS = ApiTexts(request=lambda body: list(string(body, "prompt")))
IMAGES = DialectSpec(Dialect.IMAGES, ("/v1/images/generations",), _generation, texts=_TEXTS, provider_in_path=False)
IMAGE_EDITS = DialectSpec(Dialect.IMAGE_EDITS, ("/v1/images/edits",), _edit, texts=_TEXTS, provider_in_path=False)
