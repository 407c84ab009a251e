"""Where the text is in a client API's requests, answers and stream events.

Each module of proxy.apis says it for its API with an ApiTexts built from
the helpers here; proxy.guardrails reads it to check and redact, and
proxy.usage to estimate a prompt the upstream never counted.

A slot is `(container, key)` with `container[key]` a string, so a redaction
writes back in place (on a copy of the request body). Requests: every text
the client sends (messages and their content parts, system prompts and
instructions, tool results and tool call arguments, embeddings input, a
completion's prompt). Answers and streams: the text the model writes.

A stream's text arrives in pieces on channels (a choice, a content block);
the stream guard holds a channel's tail until its next piece or its end.
"""

from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any

Slot = tuple[Any, Any]
Piece = tuple[Hashable, Slot]  # a piece of a stream's text, on its channel
ALL = "*"  # a stream event that ends every channel

Body = dict[str, Any]


def no_slots(body: Body) -> list[Slot]:
    return []


def no_pieces(event: Body) -> list[Piece]:
    return []


def no_ends(event: Body) -> list[Hashable] | str:
    return []


def none_counted(body: Body) -> int:
    return 0


@dataclass(frozen=True)
class ApiTexts:
    """One API's text locations, and what its prompt estimate counts
    besides the text. The defaults: an API whose answers carry no text the
    model wrote (embeddings, images, speech) and that never streams it."""

    request: Callable[[Body], list[Slot]]  # every text the client sends
    answer: Callable[[Body], list[Slot]] = no_slots  # the model's text in a whole answer
    stream: Callable[[Body], list[Piece]] = no_pieces  # the pieces of text in one stream event
    stream_ends: Callable[[Body], list[Hashable] | str] = no_ends  # the channels it ends (ALL: every one)
    # Whole texts an event repeats from the pieces before it (the Responses
    # API's `.done` events): redacted the same way, not counted again.
    stream_echoes: Callable[[Body], list[Slot]] = no_slots
    # The messages (or inputs) a request frames: each costs a few tokens of
    # role and framing on top of its text, in the prompt estimate.
    turns: Callable[[Body], int] = none_counted
    # Image, audio and file parts, whose tokens their bytes do not bound (an
    # image URL is a few bytes and hundreds of tokens): the budget's worst
    # case allows for each.
    media_parts: Callable[[Body], int] = none_counted

    def prompt_chars(self, body: Body) -> int:
        """The characters of every text the request sends (its request slots)."""
        return sum(len(holder[key]) for holder, key in self.request(body))


# --- slot helpers -----------------------------------------------------------------


def string(container: Any, key: Any) -> Iterator[Slot]:
    try:
        value = container[key]
    except (KeyError, IndexError, TypeError):
        return
    if isinstance(value, str):
        yield container, key


def strings(container: Any, key: Any) -> Iterator[Slot]:
    """A string, or a list of strings (embeddings input, completion prompts)."""
    value = container.get(key) if isinstance(container, dict) else None
    if isinstance(value, str):
        yield container, key
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, str):
                yield value, index


def nested(value: Any) -> Iterator[Slot]:
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


def content(holder: dict[str, Any]) -> Iterator[Slot]:
    """A message's `content`: a string, or parts/blocks whose text is `text`
    (and a tool result's own content, a tool use's input)."""
    value = holder.get("content")
    if isinstance(value, str):
        yield holder, "content"
        return
    for part in value if isinstance(value, list) else ():
        if not isinstance(part, dict):
            continue
        yield from string(part, "text")
        if part.get("type") == "tool_result":
            yield from content(part)
        elif part.get("type") == "tool_use" and isinstance(part.get("input"), (dict, list)):
            yield from nested(part["input"])


def _tool_calls(message: dict[str, Any]) -> Iterator[Slot]:
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            yield from string(function, "arguments")


def messages(body: Body) -> Iterator[Slot]:
    """A `messages` list's texts: each message's content and tool calls."""
    for message in body.get("messages") or ():
        if isinstance(message, dict):
            yield from content(message)
            yield from _tool_calls(message)


def items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def entries(body: Body, name: str) -> int:
    """How many entries `body[name]` holds: a string is one, a list its length."""
    value = body.get(name)
    return 1 if isinstance(value, str) else len(value) if isinstance(value, list) else 0


def parts_of(holder: Any, kinds: frozenset[str]) -> int:
    """The content parts of `kinds` in a message's (or an item's) content list."""
    value = holder.get("content") if isinstance(holder, dict) else None
    return sum(1 for part in items(value) if isinstance(part, dict) and part.get("type") in kinds)


def finished_choices(event: Body) -> list[Hashable]:
    """The choices a chat or completions stream event ends (its finish_reason)."""
    return [
        choice.get("index", 0)
        for choice in items(event.get("choices"))
        if isinstance(choice, dict) and choice.get("finish_reason")
    ]
