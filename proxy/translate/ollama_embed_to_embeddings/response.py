"""OpenAI embeddings answers as Ollama's `/api/embed` and `/api/embeddings`
answers (embeddings -> Ollama)."""

from typing import Any

from proxy.providers.base import token_count


def embeddings_response_to_ollama_embed(data: dict[str, Any], *, model: str, duration_ns: int) -> dict[str, Any]:
    """OpenAI's embeddings list as /api/embed's answer. Raises ValueError on
    an answer that is not OpenAI's shape."""
    usage = data.get("usage")
    return {
        "model": model,
        "embeddings": _vectors(data),
        "total_duration": duration_ns,
        "load_duration": 0,
        "prompt_eval_count": token_count(usage.get("prompt_tokens")) if isinstance(usage, dict) else 0,
    }


def embeddings_response_to_ollama_embeddings(data: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's embeddings list (of one input) as the legacy /api/embeddings answer."""
    vectors = _vectors(data)
    return {"embedding": vectors[0] if vectors else []}


def _vectors(data: dict[str, Any]) -> list[list[float]]:
    """The vectors in input order (OpenAI's `index`, which providers may not
    keep in order)."""
    items = data.get("data")
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise ValueError("an embeddings answer without a data list")
    vectors = []
    for item in sorted(items, key=_index):
        vector = item.get("embedding")
        if not isinstance(vector, list):  # base64: the request never asks for it
            raise ValueError("an embedding that is not a list of numbers")
        vectors.append(vector)
    return vectors


def _index(item: dict[str, Any]) -> int:
    index = item.get("index")
    return index if isinstance(index, int) else 0
