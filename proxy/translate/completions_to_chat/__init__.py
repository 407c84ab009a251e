"""Legacy completions clients on chat upstreams: the request goes
completions -> chat (request), the answer and its stream chat -> completions
(response, stream). Loaded with the first such request
(proxy.apis.completions)."""
