"""Turning a cached chat answer into what the client asked for. Pure.

A streamed answer is stored as its SSE events and as the one JSON body they
add up to; a JSON answer is stored as its body, and replayed to a streaming
client as a short, valid stream of chunks with the same content.
"""

from collections.abc import Iterable
from typing import Any

import orjson

from gateway.kernel.sse import event_data

DONE = b"data: [DONE]\n\n"


def _sse(chunk: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def completion_from_events(events: Iterable[bytes]) -> dict[str, Any]:
    """The chat.completion a non-streaming client would have received."""
    head: dict[str, Any] = {}
    choices: dict[int, dict[str, Any]] = {}
    usage = None
    for event in events:
        data = event_data(event)
        if data is None or data == b"[DONE]":
            continue
        chunk = orjson.loads(data)
        if not isinstance(chunk, dict):
            raise ValueError("a stream event is not a JSON object")
        for name in ("id", "created", "model", "system_fingerprint"):
            if chunk.get(name) is not None:
                head.setdefault(name, chunk[name])
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or ():
            _merge(choices.setdefault(choice.get("index", 0), {"content": [], "tool_calls": {}}), choice)
    return {
        "id": head.get("id", ""),
        "object": "chat.completion",
        "created": head.get("created", 0),
        "model": head.get("model", ""),
        "choices": [_message(index, state) for index, state in sorted(choices.items())],
        "usage": usage,
        **({"system_fingerprint": head["system_fingerprint"]} if "system_fingerprint" in head else {}),
    }


def _merge(state: dict[str, Any], choice: dict[str, Any]) -> None:
    """Raises ValueError on a shape it cannot faithfully reassemble; the
    answer is then not cached rather than cached wrong."""
    delta = choice.get("delta") if isinstance(choice, dict) else None
    if not isinstance(delta, dict):
        raise ValueError("a stream choice has no delta object")
    state.setdefault("role", delta.get("role"))
    if delta.get("content"):
        if not isinstance(delta["content"], str):
            raise ValueError("stream content that is not text")
        state["content"].append(delta["content"])
    if delta.get("refusal"):
        state["refusal"] = state.get("refusal", "") + delta["refusal"]
    for call in delta.get("tool_calls") or ():
        slot = state["tool_calls"].setdefault(
            call.get("index", 0), {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
        )
        slot["id"] = call.get("id") or slot["id"]
        function = call.get("function") or {}
        slot["function"]["name"] += function.get("name") or ""
        slot["function"]["arguments"] += function.get("arguments") or ""
    if choice.get("finish_reason"):
        state["finish_reason"] = choice["finish_reason"]


def _message(index: int, state: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": state.get("role") or "assistant", "content": "".join(state["content"]) or None}
    if state.get("refusal"):
        message["refusal"] = state["refusal"]
    if state["tool_calls"]:
        message["tool_calls"] = [call for _, call in sorted(state["tool_calls"].items())]
    return {"index": index, "message": message, "finish_reason": state.get("finish_reason"), "logprobs": None}


def events_from_completion(completion: dict[str, Any], *, include_usage: bool) -> list[bytes]:
    """A valid stream for a JSON answer: per choice its role and content, its
    tool calls and its finish reason; then usage if asked; then [DONE]."""
    head = {
        "id": completion.get("id", ""),
        "object": "chat.completion.chunk",
        "created": completion.get("created", 0),
        "model": completion.get("model", ""),
    }
    events = []
    for choice in completion.get("choices") or ():
        index, message = choice.get("index", 0), choice.get("message") or {}
        delta = {"role": message.get("role", "assistant"), "content": message.get("content") or ""}
        if message.get("refusal"):
            delta["refusal"] = message["refusal"]
        events.append(_sse({**head, "choices": [{"index": index, "delta": delta, "finish_reason": None}]}))
        calls = [{**call, "index": i} for i, call in enumerate(message.get("tool_calls") or ())]
        if calls:
            events.append(
                _sse({**head, "choices": [{"index": index, "delta": {"tool_calls": calls}, "finish_reason": None}]})
            )
        events.append(
            _sse({**head, "choices": [{"index": index, "delta": {}, "finish_reason": choice.get("finish_reason")}]})
        )
    if include_usage and completion.get("usage"):
        events.append(_sse({**head, "choices": [], "usage": completion["usage"]}))
    events.append(DONE)
    return events


def recorded_events(events: Iterable[bytes], *, include_usage: bool) -> list[bytes]:
    """A recorded stream for replay, without the usage chunk unless asked."""
    if include_usage:
        return list(events)
    kept = []
    for event in events:
        data = event_data(event)
        if data and data != b"[DONE]" and b'"usage"' in data:
            chunk = orjson.loads(data)
            if chunk.get("usage") and not chunk.get("choices"):
                continue
        kept.append(event)
    return kept
