"""Ollama's /api/tags, /api/show and /api/ps bodies (proxy.translate.ollama_catalog).

The `ollama` package, when installed, checks fidelity: its pydantic types
parse every answer. Those tests skip without it.
"""

from proxy.tests.ollama_fidelity import CREATED, ollama_types
from proxy.translate.ollama_catalog import ollama_ps, ollama_show, ollama_tags


def test_tags_list_every_model_with_a_stable_digest() -> None:
    tags = ollama_tags([("gpt-4o", "openai"), ("claude-sonnet", "anthropic")], modified_at=CREATED)
    assert tags["models"][0] == {
        "name": "gpt-4o",
        "model": "gpt-4o",
        "modified_at": CREATED,
        "size": 0,
        "digest": "a2a69af70d1b9be70f1abf8218492c5e65aea34285462bd65757cd6f44a7c10e",
        "details": {
            "parent_model": "",
            "format": "",
            "family": "openai",
            "families": ["openai"],
            "parameter_size": "",
            "quantization_level": "",
        },
    }
    assert [model["name"] for model in tags["models"]] == ["gpt-4o", "claude-sonnet"]
    listed = ollama_types().ListResponse.model_validate(tags)
    assert [model.model for model in listed.models] == ["gpt-4o", "claude-sonnet"]


# --- /api/show, /api/ps ------------------------------------------------------


def test_show_describes_a_remote_model_in_the_shape_the_ollama_client_reads() -> None:
    shown = ollama_types().ShowResponse.model_validate(ollama_show("gpt-4o", "openai", modified_at=CREATED))
    assert shown.details.family == "openai"
    assert shown.modelinfo == {"general.architecture": "openai", "general.basename": "gpt-4o"}
    assert shown.capabilities == ["completion"]


def test_ps_lists_every_model_as_loaded_until_the_keep_alive_ends() -> None:
    running = ollama_types().ProcessResponse.model_validate(
        ollama_ps([("gpt-4o", "openai"), ("claude-sonnet", "anthropic")], expires_at=CREATED)
    )
    assert [(m.name, m.details.family, m.size_vram) for m in running.models] == [
        ("gpt-4o", "openai", 0),
        ("claude-sonnet", "anthropic", 0),
    ]
    assert running.models[0].expires_at.isoformat() == "2025-01-02T03:04:05+00:00"
