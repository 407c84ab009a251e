"""Where the text is, in each client API's requests, answers and stream events.

A slot is `(container, key)` with `container[key]` a string, so a redaction
writes back in place (on a copy of the request body). Requests: every text
the client sends (messages and their content parts, system prompts and
instructions, tool results and tool call arguments, embeddings input, a
completion's prompt). Answers and streams: the text the model writes.
"""

from collections.abc import Hashable, Iterator
from typing import Any

from proxy.dialects import Dialect

Slot = tuple[Any, Any]
ALL = "*"  # a stream event that ends every channel


def _string(container: Any, key: Any) -> Iterator[Slot]:
    try:
        value = container[key]
    except (KeyError, IndexError, TypeError):
        return
    if isinstance(value, str):
        yield container, key


def _strings(container: Any, key: Any) -> Iterator[Slot]:
    """A string, or a list of strings (embeddings input, completion prompts)."""
    value = container.get(key) if isinstance(container, dict) else None
    if isinstance(value, str):
        yield container, key
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, str):
                yield value, index


def _nested(value: Any) -> Iterator[Slot]:
    """Every string inside parsed JSON (a tool call's input)."""
    stack = [value]
    while stack:
        item = stack.pop()
        pairs = item.items() if isinstance(item, dict) else enumerate(item) if isinstance(item, list) else ()
        for key, child in pairs:
            if isinstance(child, str):
                yield item, key
            elif isinstance(child, (dict, list)):
                stack.append(child)


def _content(holder: dict[str, Any]) -> Iterator[Slot]:
    """A message's `content`: a string, or parts/blocks whose text is `text`
    (and a tool result's own content, a tool use's input)."""
    content = holder.get("content")
    if isinstance(content, str):
        yield holder, "content"
        return
    for part in content if isinstance(content, list) else ():
        if not isinstance(part, dict):
            continue
        yield from _string(part, "text")
        if part.get("type") == "tool_result":
            yield from _content(part)
        elif part.get("type") == "tool_use" and isinstance(part.get("input"), (dict, list)):
            yield from _nested(part["input"])


def _tool_calls(message: dict[str, Any]) -> Iterator[Slot]:
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            yield from _string(function, "arguments")


def _messages(body: dict[str, Any]) -> Iterator[Slot]:
    for message in body.get("messages") or ():
        if isinstance(message, dict):
            yield from _content(message)
            yield from _tool_calls(message)


def _system(body: dict[str, Any]) -> Iterator[Slot]:
    system = body.get("system")
    if isinstance(system, str):
        yield body, "system"
    for block in system if isinstance(system, list) else ():
        if isinstance(block, dict):
            yield from _string(block, "text")


def _responses_input(body: dict[str, Any]) -> Iterator[Slot]:
    yield from _string(body, "instructions")
    items = body.get("input")
    if isinstance(items, str):
        yield body, "input"
    for item in items if isinstance(items, list) else ():
        if isinstance(item, dict):
            yield from _content(item)
            yield from _string(item, "output")  # function_call_output
            yield from _string(item, "arguments")  # function_call


def request_slots(dialect: Dialect, body: dict[str, Any]) -> list[Slot]:
    """Every text the client sends in a request of `dialect`."""
    match dialect:
        case Dialect.CHAT | Dialect.OLLAMA_CHAT:
            return list(_messages(body))
        case Dialect.MESSAGES | Dialect.COUNT_TOKENS:
            return [*_system(body), *_messages(body)]
        case Dialect.RESPONSES:
            return list(_responses_input(body))
        case Dialect.EMBEDDINGS:
            return list(_strings(body, "input"))
        case Dialect.COMPLETIONS:
            return [*_strings(body, "prompt"), *_string(body, "suffix")]
        case Dialect.OLLAMA_GENERATE:
            return [*_string(body, "system"), *_string(body, "prompt")]
        case Dialect.SPEECH:  # the text to speak, and how (proxy.media)
            return [*_string(body, "input"), *_string(body, "instructions")]
        case Dialect.TRANSCRIPTIONS | Dialect.TRANSLATIONS | Dialect.IMAGES | Dialect.IMAGE_EDITS:
            return list(_string(body, "prompt"))
    return []


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _response_output(response: Any) -> Iterator[Slot]:
    if not isinstance(response, dict):
        return
    yield from _string(response, "output_text")
    for item in _items(response.get("output")):
        if isinstance(item, dict):
            for part in _items(item.get("content")):
                yield from _string(part, "text")


def answer_slots(dialect: Dialect, body: Any) -> list[Slot]:
    """The model's text in a whole (non-streamed) answer of `dialect`."""
    if not isinstance(body, dict):
        return []
    match dialect:
        case Dialect.CHAT:
            slots: list[Slot] = []
            for choice in _items(body.get("choices")):
                message = choice.get("message") if isinstance(choice, dict) else None
                if isinstance(message, dict):
                    slots += _content(message)
            return slots
        case Dialect.COMPLETIONS:
            return [s for choice in _items(body.get("choices")) for s in _string(choice, "text")]
        case Dialect.MESSAGES:
            return [s for block in _items(body.get("content")) for s in _string(block, "text")]
        case Dialect.RESPONSES:
            return list(_response_output(body))
        case Dialect.OLLAMA_CHAT:
            message = body.get("message")
            return list(_string(message, "content")) if isinstance(message, dict) else []
        case Dialect.OLLAMA_GENERATE:
            return list(_string(body, "response"))
        case Dialect.TRANSCRIPTIONS | Dialect.TRANSLATIONS:  # json and verbose_json; text formats are not read
            return list(_string(body, "text"))
    return []


# --- streams -------------------------------------------------------------------
# A stream's text arrives in pieces on channels (a choice, a content block);
# the stream guard holds a channel's tail until its next piece or its end.


def stream_texts(dialect: Dialect, event: dict[str, Any]) -> list[tuple[Hashable, Slot]]:
    """The pieces of text in one stream event, by channel."""
    match dialect:
        case Dialect.CHAT:
            return [
                (choice.get("index", 0), slot)
                for choice in _items(event.get("choices"))
                if isinstance(choice, dict) and isinstance(choice.get("delta"), dict)
                for slot in _string(choice["delta"], "content")
            ]
        case Dialect.COMPLETIONS:
            return [
                (choice.get("index", 0), slot)
                for choice in _items(event.get("choices"))
                if isinstance(choice, dict)
                for slot in _string(choice, "text")
            ]
        case Dialect.MESSAGES:
            delta = event.get("delta")
            if event.get("type") == "content_block_delta" and isinstance(delta, dict):
                if delta.get("type") == "text_delta":
                    return [(event.get("index", 0), slot) for slot in _string(delta, "text")]
            return []
        case Dialect.RESPONSES:
            if event.get("type") == "response.output_text.delta":
                return [(_responses_channel(event), slot) for slot in _string(event, "delta")]
            return []
        case Dialect.OLLAMA_CHAT:
            message = event.get("message")
            return [(0, slot) for slot in _string(message, "content")] if isinstance(message, dict) else []
        case Dialect.OLLAMA_GENERATE:
            return [(0, slot) for slot in _string(event, "response")]
    return []


def _responses_channel(event: dict[str, Any]) -> Hashable:
    return (event.get("output_index", 0), event.get("content_index", 0))


_RESPONSES_ENDS = frozenset({"response.completed", "response.incomplete", "response.failed"})


def stream_ends(dialect: Dialect, event: dict[str, Any]) -> list[Hashable] | str:
    """The channels this event ends (ALL: every one), after its own text."""
    match dialect:
        case Dialect.CHAT | Dialect.COMPLETIONS:
            return [
                choice.get("index", 0)
                for choice in _items(event.get("choices"))
                if isinstance(choice, dict) and choice.get("finish_reason")
            ]
        case Dialect.MESSAGES:
            kind = event.get("type")
            if kind == "content_block_stop":
                return [event.get("index", 0)]
            return ALL if kind in ("message_delta", "message_stop") else []
        case Dialect.RESPONSES:
            kind = event.get("type")
            if kind == "response.output_text.done":
                return [_responses_channel(event)]
            return ALL if kind in _RESPONSES_ENDS else []
        case Dialect.OLLAMA_CHAT | Dialect.OLLAMA_GENERATE:
            return ALL if event.get("done") else []
    return []


def stream_echoes(dialect: Dialect, event: dict[str, Any]) -> list[Slot]:
    """Whole texts an event repeats from the pieces before it (the Responses
    API's `.done` events and its final response): redacted the same way, not
    counted again."""
    if dialect is not Dialect.RESPONSES:
        return []
    kind = event.get("type")
    if kind == "response.output_text.done":
        return list(_string(event, "text"))
    if kind == "response.content_part.done":
        return list(_string(event.get("part"), "text"))
    if kind == "response.output_item.done":
        item = event.get("item")
        return (
            [s for part in _items(item.get("content")) for s in _string(part, "text")] if isinstance(item, dict) else []
        )
    if kind in _RESPONSES_ENDS:
        return list(_response_output(event.get("response")))
    return []
