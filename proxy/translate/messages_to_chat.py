"""Anthropic Messages (client) <-> OpenAI chat completions (upstream).

Choices made where the two APIs do not line up:

* Tool call arguments that are not a JSON object become
  `{"_raw_arguments": "<what the model wrote>"}`: nothing is lost, and the
  client's tool validation rejects it, so the model sees its mistake and can
  retry. The stream does the same: it buffers a tool call's arguments and
  sends them as ONE `input_json_delta` when the block ends, because a
  fragment that never becomes valid JSON makes the anthropic SDK raise.
  Anthropic itself buffers tool input this way unless the client opts into
  fine-grained tool streaming.
* A stream that breaks off (no finish_reason) ends with `stop_reason: null`:
  the SDK accepts it, and it does not claim a turn ended that did not.
* A base64 PDF `document` becomes a chat `file` part, a plain-text document
  a text part; URL and Files-API sources have no chat equivalent and are
  dropped with a note.
* Images inside a `tool_result` move to the user message that follows the
  tool messages: chat `tool` messages carry text only.
"""

import hashlib
import json
import uuid
from typing import Any

import orjson

from proxy.providers.openai import usage_from_openai
from proxy.translate import Translated, TranslationError

Json = dict[str, Any]

RAW_ARGUMENTS_KEY = "_raw_arguments"
# OpenAI rejects a longer `user`; Claude Code's user_id is about 150 characters.
USER_MAX_CHARS = 64
# `thinking.budget_tokens` below LOW_BELOW maps to "low", below MEDIUM_BELOW to "medium", else "high".
REASONING_LOW_BELOW = 4096
REASONING_MEDIUM_BELOW = 16384

# Top-level fields mapped below; every other field is dropped with a note.
_MAPPED_FIELDS = frozenset(
    {"model", "messages", "system", "max_tokens", "stop_sequences", "temperature", "top_p", "metadata", "stream"}
    | {"tools", "tool_choice", "thinking"}
)
_TOOL_FIELDS = frozenset({"type", "name", "description", "input_schema", "cache_control", "strict"})
_TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}
_STOP_REASONS = {
    "stop": "end_turn",  # OpenAI does not say whether a stop sequence ended it
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


class _Notes:
    """Header-safe notes, each once, in order (exchange.py joins them with "; ")."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, note: str) -> None:
        clean = "".join(c for c in note if " " <= c <= "~" and c != ";")[:120]
        if clean not in self.items:
            self.items.append(clean)


# --- request: Anthropic Messages -> chat completions -------------------------------------------


def messages_request_to_chat(body: Json, *, upstream_model: str) -> Translated:
    """The chat completions request for an Anthropic Messages request."""
    if not isinstance(body, dict):
        raise TranslationError("The request body must be a JSON object.")
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise TranslationError("messages must be a list.", param="messages")
    notes = _Notes()
    system = _system_texts(body.get("system"), notes)
    chat: list[Json] = []
    for position, message in enumerate(messages):
        chat += _message_to_chat(message, position, system, notes)
    if system:
        chat.insert(0, {"role": "system", "content": "\n\n".join(system)})
    out: Json = {"model": upstream_model, "messages": chat}
    _map_generation(body, out, notes)
    _map_tools(body, out, notes)
    _map_thinking(body.get("thinking"), out, notes)
    for name in body:
        if name not in _MAPPED_FIELDS:
            notes.add(f"dropped: {name}")
    return Translated(out, notes.items)


def _system_texts(system: Any, notes: _Notes) -> list[str]:
    if system is None:
        return []
    if isinstance(system, str):
        return [system] if system else []
    if not isinstance(system, list):
        raise TranslationError("system must be a string or a list of text blocks.", param="system")
    return [text for block in _blocks(system, "system") if (text := _system_block_text(block, notes))]


def _system_block_text(block: Json, notes: _Notes) -> str:
    _note_cache_control(block, notes)
    if block.get("type") != "text":
        notes.add(f"dropped: system {block.get('type')} block")
        return ""
    return _str(block.get("text"))


def _message_to_chat(message: Any, position: int, system: list[str], notes: _Notes) -> list[Json]:
    where = f"messages[{position}]"
    if not isinstance(message, dict):
        raise TranslationError(f"{where} must be an object.", param=where)
    content = message.get("content")
    if isinstance(content, str):
        blocks = [{"type": "text", "text": content}]
    elif isinstance(content, list):
        blocks = _blocks(content, f"{where}.content")
    else:
        raise TranslationError(f"{where}.content must be a string or a list of blocks.", param=f"{where}.content")
    match message.get("role"):
        case "user":
            return _user_to_chat(blocks, notes)
        case "assistant":
            return _assistant_to_chat(blocks, notes)
        case "system":  # Claude Code sends these to some models
            notes.add("mapped: system entry in messages")
            system += [text for block in blocks if (text := _system_block_text(block, notes))]
            return []
    raise TranslationError(f"{where}.role must be user or assistant.", param=f"{where}.role")


def _blocks(items: list[Any], where: str) -> list[Json]:
    if not all(isinstance(item, dict) for item in items):
        raise TranslationError(f"Every block in {where} must be an object.", param=where)
    return items


def _user_to_chat(blocks: list[Json], notes: _Notes) -> list[Json]:
    """Tool results first, as `tool` messages, then what the user said."""
    tool_messages: list[Json] = []
    tool_images: list[Json] = []
    parts: list[Json] = []
    for block in blocks:
        _note_cache_control(block, notes)
        if block.get("type") == "tool_result":
            text, images = _tool_result_content(block, notes)
            tool_messages.append({"role": "tool", "tool_call_id": _str(block.get("tool_use_id")), "content": text})
            tool_images += images
        else:
            parts += _user_parts(block, notes)
    parts = tool_images + parts
    if not parts:
        return tool_messages
    return [*tool_messages, {"role": "user", "content": _user_content(parts)}]


def _user_content(parts: list[Json]) -> str | list[Json]:
    # Plain text goes as a string: several OpenAI-compatible servers accept nothing else.
    if all(part["type"] == "text" for part in parts):
        return "\n\n".join(part["text"] for part in parts)
    return parts


def _user_parts(block: Json, notes: _Notes) -> list[Json]:
    match block.get("type"):
        case "text":
            return [{"type": "text", "text": _str(block.get("text"))}]
        case "image":
            return _image_part(block, notes)
        case "document":
            return _document_parts(block, notes)
    notes.add(f"dropped: {block.get('type')} block")
    return []


def _image_part(block: Json, notes: _Notes) -> list[Json]:
    source = _obj(block.get("source"))
    match source.get("type"):
        case "base64":
            url = f"data:{_str(source.get('media_type'))};base64,{_str(source.get('data'))}"
        case "url":
            url = _str(source.get("url"))
        case other:
            notes.add(f"dropped: image ({other} source)")
            return []
    return [{"type": "image_url", "image_url": {"url": url}}]


def _document_parts(block: Json, notes: _Notes) -> list[Json]:
    source = _obj(block.get("source"))
    title, context = _str(block.get("title")), _str(block.get("context"))
    if block.get("citations"):
        notes.add("dropped: citations")
    match source.get("type"), source.get("media_type"):
        case "text", _:
            return [{"type": "text", "text": "\n\n".join(filter(None, [title, context, _str(source.get("data"))]))}]
        case "content", _:
            inner = source.get("content")
            if isinstance(inner, str):
                inner = [{"type": "text", "text": inner}]
            blocks = [b for b in inner if isinstance(b, dict)] if isinstance(inner, list) else []
            return [part for b in blocks for part in _user_parts(b, notes)]
        case "base64", "application/pdf":
            notes.add("mapped: pdf document -> file part")
            if context:
                notes.add("dropped: document context")
            data_url = f"data:application/pdf;base64,{_str(source.get('data'))}"
            return [{"type": "file", "file": {"filename": title or "document.pdf", "file_data": data_url}}]
        case other, _:
            notes.add(f"dropped: document ({other} source)")
            return []


def _tool_result_content(block: Json, notes: _Notes) -> tuple[str, list[Json]]:
    content = block.get("content")
    texts: list[str] = []
    images: list[Json] = []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for item in (c for c in content if isinstance(c, dict)):
            _note_cache_control(item, notes)
            if item.get("type") == "text":
                texts.append(_str(item.get("text")))
            elif item.get("type") == "image":
                notes.add("mapped: tool_result image -> user message")
                images += _image_part(item, notes)
            else:
                notes.add(f"dropped: {item.get('type')} in tool_result")
    text = "\n".join(texts)
    return ("Error: " + text if block.get("is_error") is True else text), images


def _assistant_to_chat(blocks: list[Json], notes: _Notes) -> list[Json]:
    texts: list[str] = []
    tool_calls: list[Json] = []
    for block in blocks:
        _note_cache_control(block, notes)
        match block.get("type"):
            case "text":
                texts.append(_str(block.get("text")))
            case "tool_use":
                tool_calls.append(_tool_use_to_call(block))
            case "thinking" | "redacted_thinking":
                notes.add("dropped: thinking blocks")
            case other:
                notes.add(f"dropped: {other} block")
    texts = [text for text in texts if text]
    if not texts and not tool_calls:
        return []  # only thinking: nothing an upstream could use
    message: Json = {"role": "assistant", "content": "\n\n".join(texts) if texts else None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return [message]


def _tool_use_to_call(block: Json) -> Json:
    arguments = _json(block.get("input", {}))
    return {
        "id": _str(block.get("id")),
        "type": "function",
        "function": {"name": _str(block.get("name")), "arguments": arguments},
    }


def _note_cache_control(block: Json, notes: _Notes) -> None:
    if "cache_control" in block:
        notes.add("dropped: cache_control")


def _map_generation(body: Json, out: Json, notes: _Notes) -> None:
    # max_tokens stays max_tokens: some compatible upstreams do not know max_completion_tokens.
    for source, target in (("max_tokens", "max_tokens"), ("temperature", "temperature"), ("top_p", "top_p")):
        if body.get(source) is not None:
            out[target] = body[source]
    if body.get("stop_sequences"):
        out["stop"] = body["stop_sequences"]
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}  # the real counts for message_delta
    _map_metadata(body.get("metadata"), out, notes)


def _map_metadata(metadata: Any, out: Json, notes: _Notes) -> None:
    if not isinstance(metadata, dict):
        if metadata is not None:
            notes.add("dropped: metadata")
        return
    user = metadata.get("user_id")
    if isinstance(user, str) and user:
        if len(user) > USER_MAX_CHARS:  # a stable digest still tells users apart
            user = hashlib.sha256(user.encode()).hexdigest()
            notes.add("mapped: metadata.user_id -> user (sha256)")
        out["user"] = user
    for name in metadata:
        if name != "user_id":
            notes.add(f"dropped: metadata.{name}")


def _map_tools(body: Json, out: Json, notes: _Notes) -> None:
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise TranslationError("tools must be a list.", param="tools")
        functions = [function for tool in _blocks(tools, "tools") if (function := _tool_to_function(tool, notes))]
        if functions:
            out["tools"] = functions
    if body.get("tool_choice") is not None:
        _map_tool_choice(body["tool_choice"], out, notes)


def _tool_to_function(tool: Json, notes: _Notes) -> Json | None:
    kind = tool.get("type")
    if kind not in (None, "custom"):  # web search, bash, text editor...: run by Anthropic
        notes.add(f"dropped: server tool {kind}")
        return None
    _note_cache_control(tool, notes)
    function: Json = {"name": _str(tool.get("name"))}
    if tool.get("description") is not None:
        function["description"] = tool["description"]
    function["parameters"] = tool.get("input_schema") or {"type": "object", "properties": {}}
    if tool.get("strict") is not None:
        function["strict"] = tool["strict"]
    for name in tool:
        if name not in _TOOL_FIELDS:
            notes.add(f"dropped: tool field {name}")
    return {"type": "function", "function": function}


def _map_tool_choice(choice: Any, out: Json, notes: _Notes) -> None:
    if not isinstance(choice, dict):
        raise TranslationError("tool_choice must be an object.", param="tool_choice")
    kind = choice.get("type")
    if "tools" not in out:  # chat completions rejects a tool_choice without tools
        if kind != "none":
            notes.add("dropped: tool_choice (no tools left)")
        return
    if kind == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": _str(choice.get("name"))}}
    elif kind in _TOOL_CHOICES:
        out["tool_choice"] = _TOOL_CHOICES[kind]
    else:
        notes.add(f"dropped: tool_choice {kind}")
    if choice.get("disable_parallel_tool_use") is True:
        out["parallel_tool_calls"] = False


def _map_thinking(thinking: Any, out: Json, notes: _Notes) -> None:
    if thinking is None:
        return
    if not isinstance(thinking, dict):
        raise TranslationError("thinking must be an object.", param="thinking")
    match thinking.get("type"):
        case "enabled":
            effort = _effort_for_budget(thinking.get("budget_tokens"))
        case "adaptive":
            effort = "medium"
        case "disabled":
            return
        case other:
            notes.add(f"dropped: thinking {other}")
            return
    out["reasoning_effort"] = effort
    notes.add(f"mapped: thinking -> reasoning_effort={effort}")


def _effort_for_budget(budget: Any) -> str:
    if not isinstance(budget, int):
        return "medium"
    if budget < REASONING_LOW_BELOW:
        return "low"
    return "medium" if budget < REASONING_MEDIUM_BELOW else "high"


# --- response: chat completion -> Anthropic message --------------------------------------------


def chat_response_to_message(data: Json, *, model: str) -> Json:
    """The Anthropic message for a non-streamed chat completion."""
    choices = data.get("choices") if isinstance(data, dict) else None
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = _obj(choice.get("message"))
    content: list[Json] = []
    if reasoning := _reasoning_text(message):
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    if text := _message_text(message.get("content")):
        content.append({"type": "text", "text": text})
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        content.append({"type": "text", "text": refusal})
    calls = _items(message.get("tool_calls"))
    content += [_tool_call_to_block(call) for call in calls if isinstance(call, dict)]
    stop_reason = "refusal" if refusal else _stop_reason(choice.get("finish_reason"), used_tools=bool(calls))
    chat_id = data.get("id") if isinstance(data, dict) else None
    return {
        "id": "msg_" + (chat_id if isinstance(chat_id, str) and chat_id else uuid.uuid4().hex),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": _message_usage(data.get("usage") if isinstance(data, dict) else None),
    }


def _reasoning_text(message: Json) -> str:
    # DeepSeek and Qwen say reasoning_content; OpenRouter and newer vLLM say reasoning.
    for name in ("reasoning_content", "reasoning"):
        if isinstance(message.get(name), str) and message[name]:
            return str(message[name])
    return ""


def _message_text(content: Any) -> str:
    if isinstance(content, list):  # a few compatible servers answer in parts
        return "".join(_str(part.get("text")) for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


def _tool_call_to_block(call: Json) -> Json:
    function = _obj(call.get("function"))
    return {
        "type": "tool_use",
        "id": _tool_id(call.get("id")),
        "name": _str(function.get("name")),
        "input": _tool_input(function.get("arguments")),
    }


def _tool_id(value: Any) -> str:
    return value if isinstance(value, str) and value else "toolu_" + uuid.uuid4().hex[:24]


def _tool_input(arguments: Any) -> Json:
    """A tool call's `arguments` as Anthropic's `input` object (see the module docstring)."""
    if isinstance(arguments, dict):  # some servers send the object itself
        return arguments
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    parsed: Any = arguments
    for _ in range(2):  # some models encode the object twice
        try:
            parsed = orjson.loads(parsed)
        except orjson.JSONDecodeError:
            break
        if not isinstance(parsed, str):
            break
    return parsed if isinstance(parsed, dict) else {RAW_ARGUMENTS_KEY: arguments}


def _stop_reason(finish_reason: Any, *, used_tools: bool) -> str:
    reason = _STOP_REASONS.get(finish_reason, "end_turn") if isinstance(finish_reason, str) else "end_turn"
    # Some upstreams (Gemini's compatible API) say "stop" after calling tools.
    return "tool_use" if used_tools and reason == "end_turn" else reason


def _message_usage(usage: Any) -> Json:
    counts = usage_from_openai(usage)
    if counts is None:
        return {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    return {
        "input_tokens": counts.input_tokens,
        # Anthropic's output_tokens include thinking, as completion_tokens normally do.
        "output_tokens": counts.output_tokens + counts.reasoning_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": counts.cached_input_tokens,
    }


# --- stream: chat.completion.chunk -> Anthropic events -----------------------------------------


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
            message = _str(chunk["error"].get("message")) or "The upstream stream failed."
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
        delta = _obj(choice.get("delta"))
        events = self._text_delta("thinking", _reasoning_text(delta))
        events += self._text_delta("text", _message_text(delta.get("content")))
        if isinstance(delta.get("refusal"), str) and delta["refusal"]:
            self._refused = True
            events += self._text_delta("text", delta["refusal"])
        calls = delta.get("tool_calls")
        for call in _items(calls):
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
        function = _obj(call.get("function"))
        # Without an index (some compatible servers), a piece belongs to the open call.
        block = self._tools.get(key) if isinstance(key, int) else self._open
        events: list[Json] = []
        is_new_call = bool(isinstance(call_id, str) and call_id and (block is None or call_id != block.tool_id))
        if block is None or block.kind != "tool_use" or is_new_call:
            block = _Block("tool_use", self._next_index, _tool_id(call_id))
            empty = {"type": "tool_use", "id": block.tool_id, "name": _str(function.get("name")), "input": {}}
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
            partial_json = _json(_tool_input("".join(block.arguments)))
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
            stop_reason = _stop_reason(self._finish_reason, used_tools=self._used_tools)
        message_delta = {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": self._final_usage(),
        }
        return [*self._close_block(), message_delta, {"type": "message_stop"}]

    def _final_usage(self) -> Json:
        if self._usage is None:
            return {"output_tokens": -(-self._output_chars // CHARS_PER_TOKEN)}
        usage = _message_usage(self._usage)
        return {name: usage[name] for name in ("output_tokens", "input_tokens", "cache_read_input_tokens")}


# --- count_tokens ------------------------------------------------------------------------------

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 3  # role and separators
TOKENS_PER_IMAGE = 85  # OpenAI's low-detail price; Claude charges about (w*h)/750, unknown here
TOKENS_PER_PDF = 1600  # about one dense page: pages are not counted without parsing the PDF


def count_tokens_estimate(body: Json) -> int:
    """An estimate for /v1/messages/count_tokens when no upstream can count.

    Characters / 4, rounded up, over the system prompt, message text,
    tool_use names and inputs (JSON), tool_result text and tool definitions
    (JSON); plus 3 tokens per message, 85 per image and 1,600 per PDF.
    Thinking blocks count nothing: upstreams drop earlier turns' thinking.
    Never raises: it runs on every Messages request, before validation.
    """
    if not isinstance(body, dict):
        return 0
    tally = _Tally()
    tally.content(body.get("system"))
    messages = _items(body.get("messages"))
    for message in messages:
        tally.extra += TOKENS_PER_MESSAGE
        if isinstance(message, dict):
            tally.content(message.get("content"))
    tools = _items(body.get("tools"))
    for tool in tools:
        tally.chars += len(_json(tool))
    return -(-tally.chars // CHARS_PER_TOKEN) + tally.extra


class _Tally:
    def __init__(self) -> None:
        self.chars = 0
        self.extra = 0

    def content(self, content: Any) -> None:
        if isinstance(content, str):
            self.chars += len(content)
        elif isinstance(content, list):
            for block in content:
                if isinstance(block, dict):
                    self.block(block)

    def block(self, block: Json) -> None:
        match block.get("type"):
            case "text":
                self.content(block.get("text"))
            case "image":
                self.extra += TOKENS_PER_IMAGE
            case "tool_use":
                self.chars += len(_str(block.get("name")))
                self.chars += len(_json(block.get("input")))
            case "tool_result":
                self.content(block.get("content"))
            case "document":
                source = _obj(block.get("source"))
                if source.get("type") in ("text", "content"):
                    self.content(source.get("data") if source.get("type") == "text" else source.get("content"))
                else:
                    self.extra += TOKENS_PER_PDF


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _obj(value: Any) -> Json:
    """`value` if it is a JSON object, else an empty one: bodies come from clients and upstreams."""
    return value if isinstance(value, dict) else {}


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _json(value: Any) -> str:
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError:  # integers past 64 bits, or a value JSON cannot hold
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
