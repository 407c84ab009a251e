"""Ollama's chat and generate clients on any upstream through chat
completions: the request goes Ollama -> chat (request), the answer and its
stream chat -> Ollama (response, stream). Loaded with the first such request
(proxy.apis.ollama)."""
