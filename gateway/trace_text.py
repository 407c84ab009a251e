"""A stored trace as people read it: the prompt's turns and the answer's
text, whatever API the client spoke (chat completions, messages,
responses, completions, embeddings) and whether the answer streamed.
Pure: the bodies in, text out. Anything it does not recognise is shown as
JSON rather than left out."""

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Turn:
    role: str
    text: str


def prompt_turns(request: Any) -> list[Turn]:
    """The request's system text and messages, in order."""
    if not isinstance(request, dict):
        return [Turn("request", _as_text(request))] if request else []
    turns = []
    for key in ("system", "instructions"):
        if request.get(key):
            turns.append(Turn("system", _content_text(request[key])))
    if isinstance(request.get("messages"), list):
        turns += [_message_turn(message) for message in request["messages"]]
    for key, role in (("input", "user"), ("prompt", "user")):
        value = request.get(key)
        if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            turns += [_message_turn(item) for item in value]
        elif value:
            turns.append(Turn(role, _content_text(value)))
    return turns


def answer_text(response: Any) -> str:
    """The answer's text: from a JSON answer, or put back together from a stream's events."""
    if isinstance(response, list):
        return "".join(_event_text(event) for event in response)
    if isinstance(response, dict):
        return _answer_json_text(response)
    return _as_text(response)


def _message_turn(message: Any) -> Turn:
    if not isinstance(message, dict):
        return Turn("user", _as_text(message))
    text = _content_text(message.get("content"))
    calls = [_tool_call(call) for call in message.get("tool_calls") or []]
    return Turn(str(message.get("role") or message.get("type") or "user"), "\n".join(filter(None, [text, *calls])))


def _content_text(content: Any) -> str:
    """A content string, or the text parts of a list of parts (images and files named, not shown)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(_part_text(part) for part in content)
    return _as_text(content)


def _part_text(part: Any) -> str:
    if isinstance(part, str):
        return part
    if isinstance(part, dict):
        if isinstance(part.get("text"), str):
            return str(part["text"])
        if part.get("type") == "tool_use":
            return _tool_call({"function": {"name": part.get("name"), "arguments": part.get("input")}})
        if part.get("type") == "tool_result":
            return "[tool result] " + _content_text(part.get("content"))
        return f"[{part.get('type', 'part')}]"
    return _as_text(part)


def _tool_call(call: Any) -> str:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict):
        return _as_text(call)
    arguments = function.get("arguments")
    return f"[tool call] {function.get('name')}({arguments if isinstance(arguments, str) else _as_text(arguments)})"


def _answer_json_text(body: dict[str, Any]) -> str:
    if isinstance(body.get("error"), dict):
        return f"error: {body['error'].get('message') or _as_text(body['error'])}"
    if isinstance(body.get("choices"), list):
        texts = []
        for choice in body["choices"]:
            if isinstance(choice.get("message"), dict):
                texts.append(_message_turn(choice["message"]).text)
            elif isinstance(choice.get("text"), str):
                texts.append(choice["text"])
        return "\n\n".join(texts)
    if isinstance(body.get("content"), list):  # Anthropic messages
        return _content_text(body["content"])
    if isinstance(body.get("output"), list):  # Responses
        return "\n".join(_content_text(item.get("content")) for item in body["output"] if isinstance(item, dict))
    if isinstance(body.get("data"), list):  # embeddings: vectors say nothing to a reader
        return f"[{len(body['data'])} embedding(s)]"
    return _as_text(body)


def _event_text(event: Any) -> str:
    """The text one stream event adds (chat, completions, messages or responses)."""
    text = []
    for line in str(event).splitlines():
        if not line.startswith("data:"):
            continue
        try:
            data = json.loads(line[5:].strip())
        except ValueError:
            continue  # [DONE]
        if isinstance(data, dict):
            text.append(_delta_text(data))
    return "".join(text)


def _delta_text(data: dict[str, Any]) -> str:
    if isinstance(data.get("choices"), list) and data["choices"]:
        choice = data["choices"][0]
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict):
            return str(delta.get("content") or "")
        return str(choice.get("text") or "") if isinstance(choice, dict) else ""
    if data.get("type") == "content_block_delta" and isinstance(data.get("delta"), dict):
        return str(data["delta"].get("text") or "")
    if data.get("type") == "response.output_text.delta":
        return str(data.get("delta") or "")
    if data.get("type") == "error" and isinstance(data.get("error"), dict):
        return f"\nerror: {data['error'].get('message')}"
    return ""


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)
