"""OpenAI, Azure OpenAI and every OpenAI-compatible API (vLLM, llama.cpp,
OpenRouter, DeepSeek, ...)."""

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson
from django.conf import settings

from gateway.kernel.context import ProviderConfig, Usage
from proxy.dialects import ClientCall, Dialect
from proxy.presets import Preset
from proxy.providers.base import HubAnswer, HubCall, NativeCall, UpstreamRequest, token_count


def usage_from_openai(usage: Any) -> Usage | None:
    """OpenAI counts cached tokens inside prompt_tokens and reasoning tokens
    inside completion_tokens; the ledger's buckets are disjoint."""
    if not isinstance(usage, dict):
        return None
    prompt = token_count(usage.get("prompt_tokens"))
    completion = token_count(usage.get("completion_tokens"))
    cached = min(prompt, token_count(_details(usage, "prompt_tokens_details").get("cached_tokens")))
    reasoning = token_count(_details(usage, "completion_tokens_details").get("reasoning_tokens"))
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
    if not isinstance(choice, dict):
        return 0
    if isinstance(choice.get("text"), str):  # legacy completions
        return len(choice["text"])
    delta = choice.get("delta")
    if not isinstance(delta, dict):
        return 0
    chars = 0
    for key in ("content", "reasoning_content", "reasoning", "refusal"):
        if isinstance(delta.get(key), str):
            chars += len(delta[key])
    calls = delta.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            chars += sum(len(v) for v in (function.get("name"), function.get("arguments")) if isinstance(v, str))
    return chars


def usage_from_responses(usage: Any) -> Usage | None:
    """The Responses API's names for the same convention as chat."""
    if not isinstance(usage, dict):
        return None
    return usage_from_openai(
        {
            "prompt_tokens": usage.get("input_tokens"),
            "completion_tokens": usage.get("output_tokens"),
            "prompt_tokens_details": usage.get("input_tokens_details"),
            "completion_tokens_details": usage.get("output_tokens_details"),
        }
    )


class ResponsesStreamObserver:
    """A native Responses stream: usage arrives in its final event."""

    __slots__ = ("usage", "output_chars", "finished")

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.output_chars = 0
        self.finished = False

    def observe(self, data: bytes) -> bool:
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return True
        if not isinstance(event, dict):
            return True
        kind = event.get("type")
        if kind in (
            "response.output_text.delta",
            "response.function_call_arguments.delta",
            "response.reasoning_summary_text.delta",
            "response.refusal.delta",
        ):
            delta = event.get("delta")
            self.output_chars += len(delta) if isinstance(delta, str) else 0
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            response = event.get("response")
            if isinstance(response, dict):
                self.usage = usage_from_responses(response.get("usage"))
            self.finished = True  # each of the three ends a response
        return True


class OpenAIAdapter:
    """Chat, embeddings, legacy completions and Responses, as OpenAI serves
    them; chat completions is also the hub, so a hub call needs no translator."""

    def native_dialects(self, preset: Preset) -> frozenset[Dialect]:
        native = {Dialect.CHAT, Dialect.EMBEDDINGS}
        if preset.completions:
            native.add(Dialect.COMPLETIONS)
        if preset.responses:
            native.add(Dialect.RESPONSES)
        return frozenset(native)

    def native_request(
        self, call: ClientCall, provider: ProviderConfig, upstream_model: str, body: dict[str, Any]
    ) -> NativeCall:
        if call.dialect is Dialect.EMBEDDINGS:
            return NativeCall(self.embeddings_request(provider, upstream_model, body), None, self.usage_from_response)
        build = {
            Dialect.CHAT: self.chat_request,
            Dialect.COMPLETIONS: self.completions_request,
            Dialect.RESPONSES: self.responses_request,
        }[call.dialect]
        request, observer = build(provider, upstream_model, body, call.stream)
        return NativeCall(request, observer, self.usage_from_response)

    def hub_request(
        self, provider: ProviderConfig, upstream_model: str, body: dict[str, Any], stream: bool, answer: HubAnswer
    ) -> HubCall:
        request, observer = self.chat_request(
            provider, upstream_model, body, stream, keep_usage_chunk=answer.usage_chunk
        )
        return HubCall(request, observer, self.usage_from_response, answer_to_hub=_unchanged)

    def media_endpoint(
        self, provider: ProviderConfig, upstream_model: str, path: str, *, accept: str
    ) -> tuple[str, dict[str, str]] | None:
        return self.endpoint(provider, upstream_model, path, accept=accept)

    def realtime_endpoint(
        self, provider: ProviderConfig, upstream_model: str, query: list[tuple[str, str]], beta: str
    ) -> tuple[str, dict[str, str]] | None:
        """`<base>/realtime?model=<upstream model>` with `Authorization: Bearer`."""
        params = [("model", upstream_model), *query]
        headers = {"OpenAI-Beta": beta} if beta else {}
        if provider.api_key:
            headers["Authorization"] = f"Bearer {provider.api_key}"
        return f"{_websocket_base(provider)}/realtime?{urlencode(params)}", headers

    def chat_request(
        self,
        provider: ProviderConfig,
        upstream_model: str,
        body: dict[str, Any],
        stream: bool,
        *,
        keep_usage_chunk: bool = False,
    ) -> tuple[UpstreamRequest, OpenAIStreamObserver | None]:
        """`keep_usage_chunk`: pass the usage chunk on even when the client did
        not ask for it (a translator downstream needs it)."""
        return self._with_usage_chunk(provider, upstream_model, body, stream, "chat/completions", keep_usage_chunk)

    def completions_request(
        self, provider: ProviderConfig, upstream_model: str, body: dict[str, Any], stream: bool
    ) -> tuple[UpstreamRequest, OpenAIStreamObserver | None]:
        return self._with_usage_chunk(provider, upstream_model, body, stream, "completions", False)

    def responses_request(
        self, provider: ProviderConfig, upstream_model: str, body: dict[str, Any], stream: bool
    ) -> tuple[UpstreamRequest, ResponsesStreamObserver | None]:
        request = self._request(provider, upstream_model, "responses", {**body, "model": upstream_model}, stream)
        return request, ResponsesStreamObserver() if stream else None

    def embeddings_request(
        self, provider: ProviderConfig, upstream_model: str, body: dict[str, Any]
    ) -> UpstreamRequest:
        return self._request(provider, upstream_model, "embeddings", {**body, "model": upstream_model}, False)

    def model_list_endpoint(self, provider: ProviderConfig) -> tuple[str, dict[str, str]] | None:
        """`<base>/models`, whose entries OpenRouter and some OpenAI-compatible servers describe."""
        return self.endpoint(provider, "", "models", accept="application/json")

    def usage_from_response(self, data: Any) -> Usage | None:
        """Chat, completions and embeddings answers alike (embeddings report
        prompt tokens only), and Responses answers."""
        if not isinstance(data, dict):
            return None
        if data.get("object") == "response":
            return usage_from_responses(data.get("usage"))
        return usage_from_openai(data.get("usage"))

    def _with_usage_chunk(
        self, provider: ProviderConfig, upstream_model: str, body: dict[str, Any], stream: bool, path: str, keep: bool
    ) -> tuple[UpstreamRequest, OpenAIStreamObserver | None]:
        outgoing = dict(body)
        outgoing["model"] = upstream_model
        observer = None
        if stream:
            options = body.get("stream_options")
            wants = keep or (isinstance(options, dict) and options.get("include_usage") is True)
            outgoing["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
            observer = OpenAIStreamObserver(client_wants_usage=wants)
        return self._request(provider, upstream_model, path, outgoing, stream), observer

    def _request(
        self, provider: ProviderConfig, upstream_model: str, path: str, body: dict[str, Any], stream: bool
    ) -> UpstreamRequest:
        return UpstreamRequest(
            url=self._url(provider, upstream_model, path),
            headers=self._headers(provider, stream=stream),
            body=orjson.dumps(body),
        )

    def endpoint(
        self, provider: ProviderConfig, upstream_model: str, path: str, *, accept: str
    ) -> tuple[str, dict[str, str]]:
        """The URL and headers (the provider's credential, no Content-Type)
        of any other endpoint, such as the media ones (proxy.media)."""
        headers = {k: v for k, v in self._headers(provider, stream=False).items() if k != "Content-Type"}
        headers["Accept"] = accept
        return self._url(provider, upstream_model, path), headers

    def _url(self, provider: ProviderConfig, upstream_model: str, path: str) -> str:
        return provider.base_url.rstrip("/") + "/" + path

    def _headers(self, provider: ProviderConfig, *, stream: bool) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream" if stream else "application/json"}
        if provider.api_key:
            headers["Authorization"] = f"Bearer {provider.api_key}"
        return headers


class AzureOpenAIAdapter(OpenAIAdapter):
    """Azure OpenAI: the upstream model is the deployment's name, in the path;
    an `api-version` query parameter; the credential in `api-key`.

    The provider's base URL is `https://<resource>.openai.azure.com/openai`,
    optionally with `?api-version=...` (else AZURE_OPENAI_API_VERSION).
    """

    def _url(self, provider: ProviderConfig, upstream_model: str, path: str) -> str:
        parts = urlsplit(provider.base_url)
        query = dict(parse_qsl(parts.query))
        query.setdefault("api-version", settings.AZURE_OPENAI_API_VERSION)
        base = parts._replace(query="", fragment="").geturl().rstrip("/")
        return f"{base}/deployments/{upstream_model}/{path}?{urlencode(query)}"

    def _headers(self, provider: ProviderConfig, *, stream: bool) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream" if stream else "application/json"}
        if provider.api_key:
            headers["api-key"] = provider.api_key
        return headers

    def model_list_endpoint(self, provider: ProviderConfig) -> tuple[str, dict[str, str]] | None:
        return None  # Azure lists deployments, not described models

    def realtime_endpoint(
        self, provider: ProviderConfig, upstream_model: str, query: list[tuple[str, str]], beta: str
    ) -> tuple[str, dict[str, str]] | None:
        """`<base>/realtime?api-version=...&deployment=<upstream model>` with `api-key`."""
        version = ("api-version", settings.AZURE_OPENAI_REALTIME_API_VERSION)
        params = [version, ("deployment", upstream_model), *query]
        headers = {"OpenAI-Beta": beta} if beta else {}
        if provider.api_key:
            headers["api-key"] = provider.api_key
        return f"{_websocket_base(provider)}/realtime?{urlencode(params)}", headers


def _unchanged(data: dict[str, Any]) -> dict[str, Any]:
    return data


def _websocket_base(provider: ProviderConfig) -> str:
    """The base URL as a ws or wss one (as its scheme), without query or fragment."""
    parts = urlsplit(provider.base_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return parts._replace(scheme=scheme, query="", fragment="").geturl().rstrip("/")
