"""Anthropic's Messages API as an upstream.

Anthropic reports `input_tokens` *excluding* cache reads and cache writes,
which come separately as `cache_read_input_tokens` and
`cache_creation_input_tokens` (split into 5-minute and 1-hour writes in
`cache_creation`). Thinking tokens are part of `output_tokens` and are not
reported apart, so they are billed as output.
"""

from collections.abc import Mapping
from typing import Any

import orjson
from django.conf import settings

from gateway.kernel.context import ProviderConfig, Usage, estimate_tokens
from proxy.dialects import ClientCall, Dialect
from proxy.presets import Preset
from proxy.providers.base import HubAnswer, HubCall, NativeCall, UpstreamRequest, token_count

ANTHROPIC_VERSION = "2023-06-01"
_STREAMED_CHARS = {"text_delta": "text", "thinking_delta": "thinking", "input_json_delta": "partial_json"}


def usage_from_anthropic(usage: Any) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    creation = usage.get("cache_creation")
    if isinstance(creation, dict):
        write_5m = token_count(creation.get("ephemeral_5m_input_tokens"))
        write_1h = token_count(creation.get("ephemeral_1h_input_tokens"))
    else:  # older responses: one total, written with the default 5-minute lifetime
        write_5m, write_1h = token_count(usage.get("cache_creation_input_tokens")), 0
    return Usage(
        input_tokens=token_count(usage.get("input_tokens")),
        cached_input_tokens=token_count(usage.get("cache_read_input_tokens")),
        cache_write_5m_tokens=write_5m,
        cache_write_1h_tokens=write_1h,
        output_tokens=token_count(usage.get("output_tokens")),
    )


class AnthropicStreamObserver:
    """Reads usage from `message_start` and `message_delta` and counts output.

    `message_start` carries the input and cache counts (and a placeholder
    output count); `message_delta` carries the cumulative `output_tokens`
    and, in newer API versions, repeats the input counts. Until a
    `message_delta` arrives the output is taken as at least what the
    streamed characters suggest, so a stream that breaks off mid-answer
    keeps its exact input counts without billing its output as ~1 token.
    """

    __slots__ = ("_raw_usage", "_final_output", "output_chars", "finished")

    def __init__(self) -> None:
        self._raw_usage: dict[str, Any] | None = None
        self._final_output = False  # a message_delta reported output_tokens
        self.output_chars = 0
        self.finished = False

    @property
    def usage(self) -> Usage | None:
        usage = usage_from_anthropic(self._raw_usage)
        if usage is None or self._final_output:
            return usage
        estimated = estimate_tokens(self.output_chars)
        if estimated <= usage.output_tokens:
            return usage
        return Usage(
            input_tokens=usage.input_tokens,
            cached_input_tokens=usage.cached_input_tokens,
            cache_write_5m_tokens=usage.cache_write_5m_tokens,
            cache_write_1h_tokens=usage.cache_write_1h_tokens,
            output_tokens=estimated,
        )

    def observe(self, data: bytes) -> bool:
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return True  # not ours to judge: pass it on untouched
        if isinstance(event, dict):
            self.observe_event(event)
        return True  # the gateway adds nothing to Anthropic streams, so drops nothing

    def observe_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event.get("delta")
            if isinstance(delta, dict) and isinstance(delta_type := delta.get("type"), str):
                text = delta.get(_STREAMED_CHARS.get(delta_type, ""))
                self.output_chars += len(text) if isinstance(text, str) else 0
        elif kind == "message_start":
            message = event.get("message")
            usage = message.get("usage") if isinstance(message, dict) else None
            if isinstance(usage, dict):
                self._raw_usage = dict(usage)
        elif kind == "message_delta":
            self._merge_delta_usage(event.get("usage"))
        elif kind == "message_stop":
            self.finished = True

    def _merge_delta_usage(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        present = {k: v for k, v in usage.items() if v is not None}
        self._raw_usage = {**(self._raw_usage or {}), **present}
        if "output_tokens" in present:
            self._final_output = True


_NATIVE = frozenset({Dialect.MESSAGES, Dialect.COUNT_TOKENS})


class AnthropicAdapter:
    """Requests to Anthropic's own API. A Messages call's body passes through
    with only the model replaced; a chat completions (hub) one is translated
    (proxy.translate.chat_to_messages, loaded with the first such request).
    Anthropic offers neither the media endpoints nor the realtime API."""

    def native_dialects(self, preset: Preset) -> frozenset[Dialect]:
        return _NATIVE

    def native_request(
        self, call: ClientCall, provider: ProviderConfig, upstream_model: str, body: dict[str, Any]
    ) -> NativeCall:
        if call.dialect is Dialect.COUNT_TOKENS:
            request = self.count_tokens_request(provider, upstream_model, body, call.headers)
            return NativeCall(request, None, _free)
        request, observer = self.messages_request(provider, upstream_model, body, call.stream, call.headers)
        if call.query:  # Claude Code's `?beta=true`
            request = UpstreamRequest(request.url + "?" + call.query, request.headers, request.body)
        return NativeCall(request, observer, self.usage_from_response)

    def hub_request(
        self, provider: ProviderConfig, upstream_model: str, body: dict[str, Any], stream: bool, answer: HubAnswer
    ) -> HubCall:
        from proxy.translate.chat_to_messages.request import chat_request_to_messages
        from proxy.translate.chat_to_messages.response import message_response_to_chat
        from proxy.translate.chat_to_messages.stream import MessagesToChatStream

        wire = chat_request_to_messages(
            body, upstream_model=upstream_model, default_max_tokens=settings.PROXY_ANTHROPIC_DEFAULT_MAX_TOKENS
        )
        request, observer = self.messages_request(provider, upstream_model, wire.body, stream)

        def answer_to_hub(data: dict[str, Any]) -> dict[str, Any]:
            return message_response_to_chat(data, model=answer.public_model)

        stream_to_hub = None
        if stream:
            stream_to_hub = MessagesToChatStream(
                model=answer.public_model,
                completion_id=answer.completion_id,
                created=answer.created,
                include_usage=answer.usage_chunk or _wants_usage(body),
            )
        return HubCall(request, observer, self.usage_from_response, answer_to_hub, stream_to_hub, list(wire.notes))

    def media_endpoint(
        self, provider: ProviderConfig, upstream_model: str, path: str, *, accept: str
    ) -> tuple[str, dict[str, str]] | None:
        return None

    def realtime_endpoint(
        self, provider: ProviderConfig, upstream_model: str, query: list[tuple[str, str]], beta: str
    ) -> tuple[str, dict[str, str]] | None:
        return None

    def model_list_endpoint(self, provider: ProviderConfig) -> tuple[str, dict[str, str]] | None:
        return None  # Anthropic's list has display names, no descriptions

    def messages_request(
        self,
        provider: ProviderConfig,
        upstream_model: str,
        body: dict[str, Any],
        stream: bool,
        client_headers: Mapping[str, str] | None = None,
    ) -> tuple[UpstreamRequest, AnthropicStreamObserver | None]:
        request = UpstreamRequest(
            url=provider.base_url.rstrip("/") + "/messages",
            headers=self._headers(provider, client_headers, stream=stream),
            body=orjson.dumps({**body, "model": upstream_model}),
        )
        return request, AnthropicStreamObserver() if stream else None

    def count_tokens_request(
        self,
        provider: ProviderConfig,
        upstream_model: str,
        body: dict[str, Any],
        client_headers: Mapping[str, str] | None = None,
    ) -> UpstreamRequest:
        return UpstreamRequest(
            url=provider.base_url.rstrip("/") + "/messages/count_tokens",
            headers=self._headers(provider, client_headers, stream=False),
            body=orjson.dumps({**body, "model": upstream_model}),
        )

    def usage_from_response(self, data: Any) -> Usage | None:
        """A non-streamed message's usage (a count_tokens answer has none: it is free)."""
        return usage_from_anthropic(data.get("usage")) if isinstance(data, dict) else None

    @staticmethod
    def _headers(provider: ProviderConfig, client_headers: Mapping[str, str] | None, *, stream: bool) -> dict[str, str]:
        # The client's version and beta flags decide the shape of the answer it
        # gets back, so they travel on; everything else of the client's stays.
        sent = {k.lower(): v for k, v in (client_headers or {}).items()}
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if stream else "application/json",
            "anthropic-version": sent.get("anthropic-version") or ANTHROPIC_VERSION,
        }
        if sent.get("anthropic-beta"):
            headers["anthropic-beta"] = sent["anthropic-beta"]
        if provider.api_key:
            headers["x-api-key"] = provider.api_key
        return headers


def _free(data: Any) -> Usage:
    return Usage()  # counting tokens is free


def _wants_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True
