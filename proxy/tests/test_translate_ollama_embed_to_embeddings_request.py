"""Ollama's embedding requests as OpenAI embeddings requests (proxy.translate.ollama_embed_to_embeddings.request)."""

import pytest

from proxy.translate import TranslationError
from proxy.translate.ollama_embed_to_embeddings.request import (
    ollama_embed_request_to_embeddings,
    ollama_embeddings_request_to_embeddings,
)


def test_an_embed_request_becomes_an_openai_embeddings_request_with_notes_for_what_is_dropped() -> None:
    translated = ollama_embed_request_to_embeddings(
        {"model": "m", "input": ["a", "b"], "truncate": False, "options": {"num_ctx": 8}, "dimensions": 2}
    )
    assert translated.body == {"model": "m", "input": ["a", "b"], "dimensions": 2}
    assert translated.notes == ["dropped: truncate", "dropped: options"]


def test_a_legacy_embeddings_request_needs_a_prompt() -> None:
    assert ollama_embeddings_request_to_embeddings({"model": "m", "prompt": "hi"}).body == {"model": "m", "input": "hi"}
    with pytest.raises(TranslationError) as caught:
        ollama_embeddings_request_to_embeddings({"model": "m", "input": "hi"})
    assert caught.value.param == "prompt"
