"""Every client API's spec, and the lookups callers use instead of branching on the dialect.

Adding a client API takes its Dialect value (proxy.dialects), one module in
proxy/apis/ (a DialectSpec, proxy.apis.spec), one line in SPECS and its
route; a Dialect with no line fails at import, when the process starts, not
on a request.
"""

from collections.abc import Mapping

from gateway.kernel.errors import ApiFormat
from proxy.apis import audio, chat, completions, embeddings, images, messages, ollama, responses
from proxy.apis.spec import DialectSpec
from proxy.dialects import Dialect

SPECS: dict[Dialect, DialectSpec] = {
    Dialect.CHAT: chat.CHAT,
    Dialect.EMBEDDINGS: embeddings.EMBEDDINGS,
    Dialect.COMPLETIONS: completions.COMPLETIONS,
    Dialect.RESPONSES: responses.RESPONSES,
    Dialect.MESSAGES: messages.MESSAGES,
    Dialect.COUNT_TOKENS: messages.COUNT_TOKENS,
    Dialect.OLLAMA_CHAT: ollama.OLLAMA_CHAT,
    Dialect.OLLAMA_GENERATE: ollama.OLLAMA_GENERATE,
    Dialect.TRANSCRIPTIONS: audio.TRANSCRIPTIONS,
    Dialect.TRANSLATIONS: audio.TRANSLATIONS,
    Dialect.SPEECH: audio.SPEECH,
    Dialect.IMAGES: images.IMAGES,
    Dialect.IMAGE_EDITS: images.IMAGE_EDITS,
}


def spec_for(dialect: Dialect) -> DialectSpec:
    return SPECS[dialect]


def spec_for_path(path: str) -> DialectSpec | None:
    """The API called on exactly `path` (/v1/messages, /api/chat), if any."""
    return _BY_PATH.get(path)


def error_format_for_path(path: str) -> ApiFormat:
    """The envelope of an error answered before the body is parsed (a bad
    key, a body too large, an unknown route): the API the path belongs to,
    /v1/messages/... Anthropic's (also behind a provider in the path), any
    /api/ path Ollama's, else OpenAI's."""
    if path.startswith(ollama.OLLAMA_PREFIX):
        return ApiFormat.OLLAMA
    # The provider in the path (`/openrouter/v1/messages`) is the same API.
    head, _, rest = path.removeprefix("/").partition("/")
    in_path = f"/{rest}" if head != "v1" and rest.startswith("v1/") else None
    for spec in _PREFIXED:
        if any(path.startswith(own) for own in spec.paths):
            return spec.error_format
        if in_path is not None and spec.provider_in_path and any(in_path.startswith(own) for own in spec.paths):
            return spec.error_format
    return ApiFormat.OPENAI


def specs_check(specs: Mapping[Dialect, DialectSpec] = SPECS) -> None:
    """Raise LookupError naming every Dialect without a spec, or filed under another's key."""
    missing = [dialect.value for dialect in Dialect if dialect not in specs]
    misfiled = [dialect.value for dialect, spec in specs.items() if spec.dialect is not dialect]
    if missing or misfiled:
        raise LookupError(f"client APIs without a spec in proxy.apis.registry: {missing}; misfiled: {misfiled}")


specs_check()
_BY_PATH = {path: spec for spec in SPECS.values() for path in spec.paths}
# The APIs whose error envelope is not OpenAI's, matched by path prefix.
_PREFIXED = tuple(spec for spec in SPECS.values() if spec.error_format is not ApiFormat.OPENAI)
