"""OpenAI chat-completions clients on Anthropic Messages upstreams: the
request goes chat -> Messages (request), the answer and its stream events
Messages -> chat (response, stream). Loaded with the first such request
(proxy.providers.anthropic)."""
