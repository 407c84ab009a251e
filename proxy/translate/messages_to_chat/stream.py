"""Chat-completions stream chunks as Anthropic's stream events (chat ->
Messages), for an Anthropic Messages client on a chat-completions upstream.

* The stream buffers a tool call's arguments and sends them as ONE
  `input_json_delta` when the block ends, because a fragment that never
  becomes valid JSON makes the anthropic SDK raise (answer_parts says what
  arguments that are not a JSON object become). Anthropic itself buffers
  tool input this way unless the client opts into fine-grained tool
  streaming.
* A stream that breaks off (no finish_reason) ends with `stop_reason: null`:
  the SDK accepts it, and it does not claim a turn ended that did not.
"""

from typing import Any

from gateway.kernel.context import estimate_tokens
from proxy.translate.json_values import Json, as_list, as_obj, as_str, compact_json
from proxy.translate.messages_to_chat.answer_parts import (
    message_text,
    message_usage,
    stop_reason_for,
    tool_use_id,
    tool_use_input,
)
from proxy.translate.reasoning import reasoning_text


class _Block:
    __slots__ = ("kind", "index", "tool_id", "arguments")

    def __init__(self, kind: str, index: int, tool_id: str = "") -> None:
        self.kind = kind
        self.index = index
        self.tool_id = tool_id
        self.arguments: list[str] = []


def _empty_block(kind: str) -> Json:
    if kind == "thinking":  # no signature: the upstream's reasoning is not Anthropic's to sign
        return {"type": "thinking", "thinking": "", "signature": ""}
    return {"type": "text", "text": ""}


class ChatToMessagesStream:
    """OpenAI chunks in, Anthropic's exact event sequence out.

    Blocks follow one another (thinking, text, tool_use...), each started,
    filled and stopped before the next. `message_delta` waits for the usage
    chunk that follows the finish_reason chunk, or for `close()`.
    """

    def __init__(self, *, model: str, message_id: str, input_tokens_estimate: int) -> None:
        self._model = model
        self._message_id = message_id
        self._input_estimate = input_tokens_estimate
        self._started = False
        self._ended = False
        self._open: _Block | None = None
        self._next_index = 0
        self._tools: dict[Any, _Block] = {}  # by the upstream's tool_calls index
        self._finish_reason: str | None = None
        self._used_tools = False
        self._refused = False
        self._usage: Json | None = None
        self._output_chars = 0  # for an estimate when the upstream reports no usage

    def feed(self, chunk: Json) -> list[Json]:
        if self._ended or not isinstance(chunk, dict):
            return []
        if isinstance(chunk.get("error"), dict) and not chunk.get("choices"):
            self._ended = True
            message = as_str(chunk["error"].get("message")) or "The upstream stream failed."
            return [{"type": "error", "error": {"type": "api_error", "message": message}}]
        events = self._start()
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        choices = chunk.get("choices")
        if isinstance(choices, list) and choices:
            events += self._choice(choices[0] if isinstance(choices[0], dict) else {})
        elif self._finish_reason is not None and self._usage is not None:
            events += self._end()  # the usage chunk after the finish_reason chunk
        return events

    def close(self) -> list[Json]:
        if self._ended:
            return []
        return self._start() + self._end()

    def _start(self) -> list[Json]:
        if self._started:
            return []
        self._started = True
        message: Json = {
            "id": self._message_id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": self._input_estimate,
                "output_tokens": 1,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }
        return [{"type": "message_start", "message": message}]

    def _choice(self, choice: Json) -> list[Json]:
        delta = as_obj(choice.get("delta"))
        events = self._text_delta("thinking", reasoning_text(delta))
        events += self._text_delta("text", message_text(delta.get("content")))
        if isinstance(delta.get("refusal"), str) and delta["refusal"]:
            self._refused = True
            events += self._text_delta("text", delta["refusal"])
        calls = delta.get("tool_calls")
        for call in as_list(calls):
            if isinstance(call, dict):
                events += self._tool_call_delta(call)
        if isinstance(choice.get("finish_reason"), str):
            self._finish_reason = choice["finish_reason"]
        return events

    def _text_delta(self, kind: str, text: str) -> list[Json]:
        if not text:
            return []
        events: list[Json] = []
        block = self._open
        if block is None or block.kind != kind:
            block = _Block(kind, self._next_index)
            events += self._open_block(block, _empty_block(kind))
        self._output_chars += len(text)
        delta = {"type": f"{kind}_delta", kind: text}  # text_delta or thinking_delta
        return [*events, {"type": "content_block_delta", "index": block.index, "delta": delta}]

    def _tool_call_delta(self, call: Json) -> list[Json]:
        """The first piece of a call has its id and name; arguments come in pieces."""
        key, call_id = call.get("index"), call.get("id")
        function = as_obj(call.get("function"))
        # Without an index (some compatible servers), a piece belongs to the open call.
        block = self._tools.get(key) if isinstance(key, int) else self._open
        events: list[Json] = []
        is_new_call = bool(isinstance(call_id, str) and call_id and (block is None or call_id != block.tool_id))
        if block is None or block.kind != "tool_use" or is_new_call:
            block = _Block("tool_use", self._next_index, tool_use_id(call_id))
            empty = {"type": "tool_use", "id": block.tool_id, "name": as_str(function.get("name")), "input": {}}
            events += self._open_block(block, empty)
            self._tools[key] = block
            self._used_tools = True
        if block is not self._open:
            return events  # a late piece of a call already ended: OpenAI never interleaves calls
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            block.arguments.append(arguments)
            self._output_chars += len(arguments)
        return events

    def _open_block(self, block: _Block, empty: Json) -> list[Json]:
        events = self._close_block()
        self._open = block
        self._next_index += 1
        return [*events, {"type": "content_block_start", "index": block.index, "content_block": empty}]

    def _close_block(self) -> list[Json]:
        block, self._open = self._open, None
        if block is None:
            return []
        events: list[Json] = []
        if block.kind == "tool_use" and "".join(block.arguments).strip():
            partial_json = compact_json(tool_use_input("".join(block.arguments)))
            events.append(
                {
                    "type": "content_block_delta",
                    "index": block.index,
                    "delta": {"type": "input_json_delta", "partial_json": partial_json},
                }
            )
        return [*events, {"type": "content_block_stop", "index": block.index}]

    def _end(self) -> list[Json]:
        self._ended = True
        stop_reason = None  # broke off: see the module docstring
        if self._refused:
            stop_reason = "refusal"
        elif self._finish_reason is not None:
            stop_reason = stop_reason_for(self._finish_reason, used_tools=self._used_tools)
        message_delta = {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": self._final_usage(),
        }
        return [*self._close_block(), message_delta, {"type": "message_stop"}]

    def _final_usage(self) -> Json:
        if self._usage is None:
            return {"output_tokens": estimate_tokens(self._output_chars)}
        usage = message_usage(self._usage)
        return {name: usage[name] for name in ("output_tokens", "input_tokens", "cache_read_input_tokens")}
