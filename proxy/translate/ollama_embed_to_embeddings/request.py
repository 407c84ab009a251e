"""Ollama's `/api/embed` and `/api/embeddings` requests as OpenAI embeddings
requests (Ollama -> embeddings), served through the model's embeddings route
(proxy.compat)."""

from typing import Any

from proxy.translate import Translated, TranslationError

# Ollama embedding fields with no OpenAI equivalent: OpenAI never truncates
# (it refuses an input that is too long), and has no options or keep-alive.
_EMBED_DROPPED = ("truncate", "options", "keep_alive")


def ollama_embed_request_to_embeddings(body: dict[str, Any]) -> Translated:
    """/api/embed (`input`: a string or a list of them) as an OpenAI
    embeddings request for the same public model; routing replaces it."""
    out: dict[str, Any] = {"model": body.get("model"), "input": body.get("input")}
    if body.get("dimensions") is not None:
        out["dimensions"] = body["dimensions"]
    return Translated(body=out, notes=_embed_notes(body))


def ollama_embeddings_request_to_embeddings(body: dict[str, Any]) -> Translated:
    """The legacy /api/embeddings (one `prompt`) as an OpenAI embeddings request."""
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise TranslationError("'prompt' is required and must be a non-empty string.", param="prompt")
    return Translated(body={"model": body.get("model"), "input": prompt}, notes=_embed_notes(body))


def _embed_notes(body: dict[str, Any]) -> list[str]:
    # Only Ollama's own fields are named: the notes go in a header, and an
    # unknown field is ignored, as Ollama ignores it.
    return [f"dropped: {key}" for key in _EMBED_DROPPED if body.get(key) is not None]
