"""What Ollama's `/api/tags`, `/api/show` and `/api/ps` say of the models the
gateway routes (proxy.compat serves them). The weights live at the
providers, so nothing here is measured locally."""

import hashlib
from typing import Any


def ollama_tags(models: list[tuple[str, str]], *, modified_at: str) -> dict[str, Any]:
    """The /api/tags body for (model name, owner) pairs. Nothing is stored
    locally, so sizes are 0; the digest is a stable hash of the name, which
    is all clients use it for (telling models apart)."""
    return {"models": [_tag(name, owner, modified_at) for name, owner in models]}


def _tag(name: str, owner: str, modified_at: str) -> dict[str, Any]:
    return {
        "name": name,
        "model": name,
        "modified_at": modified_at,
        "size": 0,
        "digest": _digest(name),
        "details": _details(owner),
    }


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def _details(owner: str) -> dict[str, Any]:
    """What Ollama says of a model's weights. They live at the provider, so
    only the family (the provider named as the model's owner) is known."""
    return {
        "parent_model": "",
        "format": "",
        "family": owner,
        "families": [owner],
        "parameter_size": "",
        "quantization_level": "",
    }


def ollama_show(name: str, owner: str, *, modified_at: str) -> dict[str, Any]:
    """The /api/show body for a routed model. No modelfile, template or
    parameters exist here (the provider applies its own), so those are
    empty strings, which clients such as Open WebUI accept. Only
    `completion` is claimed: what else a remote model can do (tools,
    vision) is not known here."""
    return {
        "modelfile": "",
        "parameters": "",
        "template": "",
        "license": "",
        "details": _details(owner),
        "model_info": {"general.architecture": owner, "general.basename": name},
        "capabilities": ["completion"],
        "modified_at": modified_at,
    }


def ollama_ps(models: list[tuple[str, str]], *, expires_at: str) -> dict[str, Any]:
    """The /api/ps body: every model the key may use counts as running,
    since the provider keeps it loaded. `expires_at` is when Ollama's default
    keep-alive would end, as a local Ollama reports it."""
    return {
        "models": [
            {
                "name": name,
                "model": name,
                "size": 0,
                "digest": _digest(name),
                "details": _details(owner),
                "expires_at": expires_at,
                "size_vram": 0,
            }
            for name, owner in models
        ]
    }
