"""OpenAI Responses API clients on upstreams without it: the request goes
Responses -> chat completions (request), the answer and its stream chat ->
Responses (response, stream). Loaded with the first such request
(proxy.apis.responses)."""
