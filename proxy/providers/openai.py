"""OpenAI and every OpenAI-compatible API (vLLM, llama.cpp, OpenRouter, ...)."""

from typing import Any

import orjson

from proxy.context import ProviderConfig, Usage
from proxy.providers.base import UpstreamRequest


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def usage_from_openai(usage: Any) -> Usage | None:
    """OpenAI counts cached tokens inside prompt_tokens and reasoning tokens
    inside completion_tokens; the ledger's buckets are disjoint."""
    if not isinstance(usage, dict):
        return None
    prompt = _count(usage.get("prompt_tokens"))
    completion = _count(usage.get("completion_tokens"))
    cached = min(prompt, _count(_details(usage, "prompt_tokens_details").get("cached_tokens")))
    reasoning = _count(_details(usage, "completion_tokens_details").get("reasoning_tokens"))
    # Reasoning is normally part of completion_tokens; some compatible APIs
    # report it on top (reasoning > completion), and then it is billed whole.
    output = completion - reasoning if reasoning <= completion else completion
    return Usage(
        input_tokens=prompt - cached,
        cached_input_tokens=cached,
        output_tokens=output,
        reasoning_tokens=reasoning,
    )


def _details(usage: dict[str, Any], name: str) -> dict[str, Any]:
    details = usage.get(name)
    return details if isinstance(details, dict) else {}


class OpenAIStreamObserver:
    """Reads usage from the final chunk and counts output as it streams.

    The gateway always asks for `stream_options.include_usage`; when the
    client did not, the usage-only chunk it adds is dropped again.
    """

    __slots__ = ("client_wants_usage", "usage", "output_chars", "finished")

    def __init__(self, client_wants_usage: bool) -> None:
        self.client_wants_usage = client_wants_usage
        self.usage: Usage | None = None
        self.output_chars = 0
        self.finished = False

    def observe(self, data: bytes) -> bool:
        if data == b"[DONE]":
            self.finished = True
            return True
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return True  # not ours to judge: pass it on untouched
        if not isinstance(chunk, dict):
            return True
        choices = chunk.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                self.output_chars += _delta_chars(choice)
        usage = chunk.get("usage")
        if usage:
            self.usage = usage_from_openai(usage)
            if not self.client_wants_usage and not choices:
                return False
        return True


def _delta_chars(choice: Any) -> int:
    delta = choice.get("delta") if isinstance(choice, dict) else None
    if not isinstance(delta, dict):
        return 0
    chars = 0
    for key in ("content", "reasoning_content", "refusal"):
        if isinstance(delta.get(key), str):
            chars += len(delta[key])
    calls = delta.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            chars += sum(len(v) for v in (function.get("name"), function.get("arguments")) if isinstance(v, str))
    return chars


class OpenAIAdapter:
    def chat_request(
        self, provider: ProviderConfig, upstream_model: str, body: dict[str, Any], stream: bool
    ) -> tuple[UpstreamRequest, OpenAIStreamObserver | None]:
        outgoing = dict(body)
        outgoing["model"] = upstream_model
        observer = None
        if stream:
            options = body.get("stream_options")
            wants = isinstance(options, dict) and options.get("include_usage") is True
            outgoing["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
            observer = OpenAIStreamObserver(client_wants_usage=wants)
        url = provider.base_url.rstrip("/") + "/chat/completions"
        return UpstreamRequest(url=url, headers=self._headers(provider, stream=stream), body=orjson.dumps(outgoing)), observer

    def embeddings_request(self, provider: ProviderConfig, upstream_model: str, body: dict[str, Any]) -> UpstreamRequest:
        return UpstreamRequest(
            url=provider.base_url.rstrip("/") + "/embeddings",
            headers=self._headers(provider, stream=False),
            body=orjson.dumps({**body, "model": upstream_model}),
        )

    def usage_from_response(self, data: Any) -> Usage | None:
        """Chat and embeddings answers alike (embeddings report prompt tokens only)."""
        return usage_from_openai(data.get("usage")) if isinstance(data, dict) else None

    @staticmethod
    def _headers(provider: ProviderConfig, *, stream: bool) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream" if stream else "application/json"}
        if provider.api_key:
            headers["Authorization"] = f"Bearer {provider.api_key}"
        return headers
