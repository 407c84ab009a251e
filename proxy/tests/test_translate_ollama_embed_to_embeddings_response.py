"""OpenAI embeddings answers as Ollama's (proxy.translate.ollama_embed_to_embeddings.response).

The `ollama` package, when installed, checks fidelity: its pydantic types
parse every answer. Those tests skip without it.
"""

from typing import Any

import pytest

from proxy.tests.ollama_fidelity import ollama_types
from proxy.translate.ollama_embed_to_embeddings.response import (
    embeddings_response_to_ollama_embed,
    embeddings_response_to_ollama_embeddings,
)

EMBEDDINGS = {
    "object": "list",
    # out of order: the answer follows `index`, as OpenAI defines it
    "data": [{"index": 1, "embedding": [0.3, 0.4]}, {"index": 0, "embedding": [0.1, 0.2]}],
    "usage": {"prompt_tokens": 6, "total_tokens": 6},
}


def test_an_embeddings_answer_becomes_embeds_in_input_order() -> None:
    answer = embeddings_response_to_ollama_embed(EMBEDDINGS, model="m", duration_ns=5)
    assert answer == {
        "model": "m",
        "embeddings": [[0.1, 0.2], [0.3, 0.4]],
        "total_duration": 5,
        "load_duration": 0,
        "prompt_eval_count": 6,
    }
    assert ollama_types().EmbedResponse.model_validate(answer).embeddings == [[0.1, 0.2], [0.3, 0.4]]


def test_an_embeddings_answer_becomes_the_legacy_single_embedding() -> None:
    answer = embeddings_response_to_ollama_embeddings({"data": [{"index": 0, "embedding": [0.5]}]})
    assert ollama_types().EmbeddingsResponse.model_validate(answer).embedding == [0.5]


@pytest.mark.parametrize("data", [{}, {"data": "x"}, {"data": [{"index": 0, "embedding": "AAAA"}]}])
def test_an_embeddings_answer_of_another_shape_is_refused(data: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        embeddings_response_to_ollama_embed(data, model="m", duration_ns=0)
