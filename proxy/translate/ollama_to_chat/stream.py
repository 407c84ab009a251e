"""Chat-completions stream chunks as Ollama's NDJSON stream (chat -> Ollama).

An Ollama stream's last object has `done: true` and the counts; tool calls
arrive whole, never in pieces; an error mid-stream is an object with an
`error` field, which the `ollama` client raises as ResponseError.
"""

import time
from collections.abc import Callable
from typing import Any

from proxy.translate.json_values import as_obj, as_str
from proxy.translate.ollama_to_chat.answer_parts import final_counts, tool_arguments
from proxy.translate.reasoning import reasoning_text


class ChatToOllamaStream:
    """chat.completion.chunk dicts in, Ollama NDJSON objects out.

    Each text or thinking delta becomes one `done: false` object. Tool calls
    are collected and sent whole in one object when the finish arrives, as
    Ollama does. The final `done: true` object with the counts waits for the
    usage chunk (which follows the finish) or for close(). A stream that
    breaks off before its finish ends with an `{"error": ...}` object, which
    Ollama clients raise, instead of a `done: true` that would claim the
    answer is whole. `clock` (monotonic nanoseconds) times the stream for
    the durations; tests pass a fake.
    """

    def __init__(
        self, *, model: str, generate: bool, created_at: str, clock: Callable[[], int] = time.monotonic_ns
    ) -> None:
        self._model = model
        self._generate = generate
        self._created_at = created_at
        self._clock = clock
        self._started_ns = clock()
        self._calls: dict[int, dict[str, str]] = {}
        self._finish_reason: str | None = None
        self._usage: dict[str, Any] | None = None
        self._ended = False

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        if self._ended:
            return []
        if isinstance(event.get("error"), dict):
            self._ended = True
            return [{"error": str(event["error"].get("message") or "The upstream reported an error.")}]
        out = []
        for choice in event.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # Ollama has no n: the first choice is the answer
            delta = as_obj(choice.get("delta"))
            out += self._delta(delta)
            if choice.get("finish_reason") and self._finish_reason is None:
                self._finish_reason = str(choice["finish_reason"])
                out += self._tool_calls_object()
        if isinstance(event.get("usage"), dict):
            self._usage = event["usage"]
        if self._finish_reason is not None and self._usage is not None:
            out.append(self._final_object())
        return out

    def close(self) -> list[dict[str, Any]]:
        if self._ended:
            return []
        if self._finish_reason is None:
            self._ended = True
            return [{"error": "The upstream stream ended before the answer was complete."}]
        return [self._final_object()]

    def _delta(self, delta: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        thinking = reasoning_text(delta)
        if thinking:
            out.append(self._partial(thinking=thinking))
        if isinstance(delta.get("content"), str) and delta["content"]:
            out.append(self._partial(content=delta["content"]))
        for call in delta.get("tool_calls") or []:
            if isinstance(call, dict):
                self._collect(call)
        return out

    def _collect(self, call: dict[str, Any]) -> None:
        index = call["index"] if isinstance(call.get("index"), int) else len(self._calls)
        function = as_obj(call.get("function"))
        collected = self._calls.setdefault(index, {"name": "", "arguments": ""})
        # Only the first delta names the call; some upstreams repeat the name later.
        collected["name"] = collected["name"] or as_str(function.get("name"))
        collected["arguments"] += as_str(function.get("arguments"))

    def _tool_calls_object(self) -> list[dict[str, Any]]:
        if not self._calls or self._generate:
            return []
        calls = [
            {"function": {"name": call["name"], "arguments": tool_arguments(call["arguments"])}}
            for _, call in sorted(self._calls.items())
        ]
        return [{**self._head(), "message": {"role": "assistant", "content": "", "tool_calls": calls}, "done": False}]

    def _head(self) -> dict[str, Any]:
        return {"model": self._model, "created_at": self._created_at}

    def _partial(self, *, content: str = "", thinking: str = "") -> dict[str, Any]:
        if self._generate:
            body: dict[str, Any] = {"response": content}
            if thinking:
                body["thinking"] = thinking
        else:
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if thinking:
                message["thinking"] = thinking
            body = {"message": message}
        return {**self._head(), **body, "done": False}

    def _final_object(self) -> dict[str, Any]:
        self._ended = True
        final = final_counts(self._finish_reason, self._usage, self._clock() - self._started_ns)
        if self._generate:
            return {**self._head(), "response": "", **final, "context": []}
        return {**self._head(), "message": {"role": "assistant", "content": ""}, **final}
