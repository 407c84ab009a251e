"""Anthropic Messages stream events as chat.completion.chunk dicts, for a
chat-completions client on an Anthropic upstream."""

from typing import Any

from proxy.translate.chat_to_messages.answer_parts import chat_usage, finish_reason


class MessagesToChatStream:
    """Anthropic stream events in, chat.completion.chunk dicts out.

    `close()` completes a stream that ended properly but left something
    unsent (a finish chunk, the usage chunk). A stream that broke off before
    Anthropic's `message_delta` gets nothing from `close()`: a finish_reason
    would tell the client the answer is whole when it is not, and its usage
    would be a guess. The relay reports the break in its own error event.
    """

    def __init__(self, *, model: str, completion_id: str, created: int, include_usage: bool) -> None:
        self.model = model
        self.completion_id = completion_id
        self.created = created
        self.include_usage = include_usage
        self._usage: dict[str, Any] = {}
        self._tool_index: dict[int, int] = {}  # Anthropic block index -> OpenAI tool call index
        self._finish_sent = False
        self._usage_sent = False
        self._stopped = False

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        if kind == "content_block_delta":
            return self._delta(event)
        if kind == "content_block_start":
            return self._block_start(event)
        if kind == "message_start":
            message = event.get("message") or {}
            self._usage = dict(message.get("usage") or {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "message_delta":
            self._usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
            self._finish_sent = True
            stop_reason = (event.get("delta") or {}).get("stop_reason")
            return [self._chunk({}, finish_reason(stop_reason) or "stop")]
        if kind == "message_stop":
            self._stopped = True
            return self._usage_chunk()
        if kind == "error":
            return [{"error": event.get("error") or {}}]
        return []  # ping, content_block_stop and whatever Anthropic adds later

    def close(self) -> list[dict[str, Any]]:
        events = []
        if self._stopped and not self._finish_sent:
            self._finish_sent = True
            events.append(self._chunk({}, "stop"))
        return events + self._usage_chunk()

    def _block_start(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        block = event.get("content_block") or {}
        if block.get("type") == "tool_use":
            k = self._tool_index[event.get("index", -1)] = len(self._tool_index)
            function = {"name": block.get("name"), "arguments": ""}
            return [
                self._chunk(
                    {"tool_calls": [{"index": k, "id": block.get("id"), "type": "function", "function": function}]}
                )
            ]
        if block.get("type") == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        return []

    def _delta(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        delta = event.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta":
            return [self._chunk({"content": delta.get("text", "")})]
        if kind == "thinking_delta":
            return [self._chunk({"reasoning_content": delta.get("thinking", "")})]
        if kind == "input_json_delta" and delta.get("partial_json"):
            k = self._tool_index.get(event.get("index", -1))
            if k is not None:
                return [self._chunk({"tool_calls": [{"index": k, "function": {"arguments": delta["partial_json"]}}]})]
        return []  # signature and citation deltas have no chat equivalent

    def _usage_chunk(self) -> list[dict[str, Any]]:
        if not self.include_usage or self._usage_sent or not self._finish_sent:
            return []
        self._usage_sent = True
        chunk = self._base()
        chunk["choices"] = []
        chunk["usage"] = chat_usage(self._usage)
        return [chunk]

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        chunk = self._base()
        chunk["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
        return chunk

    def _base(self) -> dict[str, Any]:
        return {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
        }
