"""Ollama's embedding clients on OpenAI embeddings routes: the request goes
Ollama -> embeddings (request), the answer embeddings -> Ollama (response).
Never streamed. Loaded with the first such request (proxy.compat)."""
