"""The reasoning an upstream's chat message (or stream delta) carries: every
translator of chat answers reads it the same way."""

from typing import Any


def reasoning_text(message: dict[str, Any]) -> str:
    # vLLM, DeepSeek, Qwen and most compatible APIs say reasoning_content;
    # OpenRouter, newer vLLM and Ollama say reasoning.
    for key in ("reasoning_content", "reasoning"):
        if isinstance(message.get(key), str) and message[key]:
            return str(message[key])
    return ""
