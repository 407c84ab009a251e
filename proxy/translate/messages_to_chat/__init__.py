"""Anthropic Messages clients on chat-completions upstreams: the request goes
Messages -> chat (request), the answer and its stream chat -> Messages
(response, stream). Loaded with the first such request (proxy.apis.messages)."""
