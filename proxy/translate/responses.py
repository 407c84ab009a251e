"""OpenAI Responses API (`POST /v1/responses`) <-> chat completions.

For upstreams that do not serve /v1/responses. The Responses API can keep a
conversation on OpenAI's servers (previous_response_id, conversation, stored
prompts and items); an upstream reached through chat completions keeps
nothing. The gateway keeps translated answers itself and puts the
conversation a previous_response_id names in the input before this module
sees it (proxy.responses_state); what is left unresolved here (conversation,
stored prompts, item references, or a previous_response_id nobody resolved)
is refused instead of answered without its history.

Item ids are derived from the response id and the item's output index
(`msg_<id>_0`, `fc_<id>_1`): the same answer always gets the same ids, and
streamed and non-streamed answers agree.
"""

from typing import Any

from proxy.providers.base import token_count
from proxy.translate import Translated, TranslationError

_PASSED = ("temperature", "top_p", "user", "parallel_tool_calls")
# Accepted by the Responses API, meaningless or unsafe to forward to a chat
# upstream (several only work with OpenAI's stored state).
_DROPPED = (
    "metadata",
    "include",
    "truncation",
    "background",
    "service_tier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "safety_identifier",
    "top_logprobs",
    "max_tool_calls",
    "stream_options",
)
_STATEFUL = ("previous_response_id", "conversation")
_TOOL_CHOICE_MODES = ("auto", "none", "required")


def responses_request_to_chat(body: dict[str, Any], *, upstream_model: str) -> Translated:
    for key in _STATEFUL:
        if body.get(key) is not None:
            raise TranslationError(
                f"{key} is not supported: the upstream does not support the Responses API, so server-side "
                "conversation state is unavailable; send the full input instead.",
                param=key,
            )
    notes: list[str] = []
    messages = [{"role": "system", "content": body["instructions"]}] if body.get("instructions") else []
    messages += _input_messages(body.get("input"), notes)
    out: dict[str, Any] = {"model": upstream_model, "messages": messages}
    for key, value in body.items():
        if key in ("model", "input", "instructions") or value is None:
            continue
        _map_field(key, value, out, notes)
    if "tools" not in out:
        # Chat upstreams reject these without tools (all of them may have been dropped above).
        for key in ("tool_choice", "parallel_tool_calls"):
            if out.pop(key, None) is not None:
                _note(notes, f"dropped: {key}")
    return Translated(body=out, notes=notes)


def _map_field(key: str, value: Any, out: dict[str, Any], notes: list[str]) -> None:
    if key in _PASSED:
        out[key] = value
    elif key == "max_output_tokens":
        out["max_tokens"] = value
    elif key == "tools":
        tools = _tools(value, notes)
        if tools:
            out["tools"] = tools
    elif key == "tool_choice":
        choice = _tool_choice(value, notes)
        if choice is not None:
            out["tool_choice"] = choice
    elif key == "text":
        _text_config(value, out, notes)
    elif key == "reasoning":
        if isinstance(value, dict) and value.get("effort"):
            out["reasoning_effort"] = value["effort"]
    elif key == "stream":
        if value:
            out["stream"] = True
            out["stream_options"] = {"include_usage": True}
    elif key == "store":
        pass  # the gateway's to honour (proxy.responses_state), not the upstream's
    elif key == "prompt":
        raise TranslationError(
            "prompt (a stored prompt template) is not supported: the upstream does not support the Responses API.",
            param="prompt",
        )
    elif key in _DROPPED:
        if value not in (False, "", [], {}):
            _note(notes, f"dropped: {key}")
    else:
        _note(notes, f"dropped: {key}")


def _note(notes: list[str], note: str) -> None:
    if note not in notes:
        notes.append(note)


# --- input items -> chat messages ---------------------------------------


def _input_messages(value: Any, notes: list[str]) -> list[dict[str, Any]]:
    if value is None:
        return []
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list):
        raise TranslationError("input must be a string or a list of items.", param="input")
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        param = f"input[{i}]"
        if not isinstance(item, dict):
            raise TranslationError("each input item must be an object.", param=param)
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message(item, param))
        elif kind == "function_call":
            _append_tool_call(messages, item, param)
        elif kind == "function_call_output":
            messages.append(_tool_result(item, param))
        elif kind == "reasoning":
            _note(notes, "dropped: input reasoning items")
        else:
            message = f"input items of type {kind} cannot be sent to this upstream."
            raise TranslationError(message, param=f"{param}.type")
    return messages


def _message(item: dict[str, Any], param: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        raise TranslationError("role must be user, assistant, system or developer.", param=f"{param}.role")
    content = item.get("content")
    if isinstance(content, list):
        parts = [_content_part(part, f"{param}.content[{j}]") for j, part in enumerate(content)]
        # Text alone as a plain string: every chat upstream accepts that (some take no part lists).
        if all(part["type"] == "text" for part in parts):
            content = "\n\n".join(part["text"] for part in parts)
        else:
            content = parts
    elif not isinstance(content, str):
        raise TranslationError("content must be a string or a list of parts.", param=f"{param}.content")
    # Developer messages are the Responses API's system messages.
    return {"role": "system" if role == "developer" else role, "content": content}


def _content_part(part: Any, param: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": part.get("text", "")}
    if kind == "refusal":
        return {"type": "text", "text": part.get("refusal", "")}
    if kind == "input_image" and part.get("image_url"):
        image: dict[str, Any] = {"url": part["image_url"]}
        if part.get("detail"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file" and part.get("file_data"):
        file = {key: part[key] for key in ("file_data", "filename") if part.get(key)}
        return {"type": "file", "file": file}
    if kind == "input_audio" and isinstance(part.get("input_audio"), dict):
        return {"type": "input_audio", "input_audio": part["input_audio"]}
    if kind in ("input_image", "input_file"):
        raise TranslationError(
            "file_id and file_url references cannot be resolved by this upstream; send the data inline.",
            param=param,
        )
    raise TranslationError(f"content parts of type {kind} cannot be sent to this upstream.", param=param)


def _append_tool_call(messages: list[dict[str, Any]], item: dict[str, Any], param: str) -> None:
    for key in ("call_id", "name"):
        if not isinstance(item.get(key), str):
            raise TranslationError(f"function_call items need a {key}.", param=f"{param}.{key}")
    call = {
        "id": item["call_id"],
        "type": "function",
        "function": {"name": item["name"], "arguments": item.get("arguments") or "{}"},
    }
    last = messages[-1] if messages else None
    # A model turn's text and calls arrive as separate items; chat keeps them in one message.
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)
    else:
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _tool_result(item: dict[str, Any], param: str) -> dict[str, Any]:
    if not isinstance(item.get("call_id"), str):
        raise TranslationError("function_call_output items need a call_id.", param=f"{param}.call_id")
    output = item.get("output")
    if isinstance(output, list):
        parts = [_content_part(part, f"{param}.output[{j}]") for j, part in enumerate(output)]
        if any(part["type"] != "text" for part in parts):
            message = "tool outputs other than text cannot be sent to this upstream."
            raise TranslationError(message, param=f"{param}.output")
        output = parts
    elif not isinstance(output, str):
        raise TranslationError("output must be a string or a list of parts.", param=f"{param}.output")
    return {"role": "tool", "tool_call_id": item["call_id"], "content": output}


# --- tools, tool_choice, text -------------------------------------------


def _tools(value: Any, notes: list[str]) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise TranslationError("tools must be a list.", param="tools")
    tools = []
    for i, tool in enumerate(value):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            _note(notes, f"dropped: tools.{kind}")
            continue
        if not isinstance(tool.get("name"), str):
            raise TranslationError("function tools need a name.", param=f"tools[{i}].name")
        function = {"name": tool["name"]}
        function.update({k: tool[k] for k in ("description", "parameters", "strict") if tool.get(k) is not None})
        tools.append({"type": "function", "function": function})
    return tools


def _tool_choice(value: Any, notes: list[str]) -> Any:
    if value in _TOOL_CHOICE_MODES:
        return value
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "function" and isinstance(value.get("name"), str):
        return {"type": "function", "function": {"name": value["name"]}}
    if kind == "allowed_tools" and value.get("mode") in _TOOL_CHOICE_MODES:
        _note(notes, f"mapped: tool_choice.allowed_tools -> {value['mode']}")
        return value["mode"]
    _note(notes, f"dropped: tool_choice.{kind}")
    return None


def _text_config(value: Any, out: dict[str, Any], notes: list[str]) -> None:
    if not isinstance(value, dict):
        raise TranslationError("text must be an object.", param="text")
    fmt = value.get("format")
    spec = fmt if isinstance(fmt, dict) else {}
    kind = spec.get("type")
    if kind == "json_schema":
        schema = {key: spec[key] for key in ("name", "description", "schema", "strict") if key in spec}
        out["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif kind == "json_object":
        out["response_format"] = {"type": "json_object"}
    elif fmt is not None and kind != "text":
        raise TranslationError(f"text.format of type {kind} is not supported.", param="text.format")
    for key in value:
        if key != "format" and value[key] is not None:
            _note(notes, f"dropped: text.{key}")


# --- non-streamed answer ------------------------------------------------


def chat_response_to_responses(
    data: dict[str, Any], *, model: str, response_id: str, created_at: int, request: dict[str, Any]
) -> dict[str, Any]:
    choices = data.get("choices") or [{}]
    choice = choices[0]
    message = choice.get("message") or {}
    status, incomplete = _status(choice.get("finish_reason"))
    item_status = "completed" if status == "completed" else "incomplete"
    ids = _ItemIds(response_id)
    output: list[dict[str, Any]] = []
    reasoning = _reasoning_text(message)
    if reasoning:
        output.append(_reasoning_item(ids.make("rs", len(output)), reasoning))
    text, refusal = _str(message.get("content")), _str(message.get("refusal"))
    calls = [call for call in message.get("tool_calls") or [] if isinstance(call, dict)]
    if text or refusal or not calls:
        parts = [_text_part(text)] if text or not refusal else []
        parts += [_refusal_part(refusal)] if refusal else []
        output.append(_message_item(ids.make("msg", len(output)), parts, item_status))
    for i, call in enumerate(calls):
        function = call.get("function") or {}
        output.append(
            _function_call_item(
                ids.make("fc", len(output)),
                call.get("id") or f"call_{i}",
                function.get("name") or "",
                function.get("arguments") or "",
                item_status,
            )
        )
    usage = responses_usage(data.get("usage"))
    return response_object(
        response_id,
        created_at,
        model,
        request,
        status=status,
        output=output,
        usage=usage,
        incomplete_details=incomplete,
    )


def response_object(
    response_id: str,
    created_at: int,
    model: str,
    request: dict[str, Any],
    *,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    incomplete_details: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Responses `response` object echoing the request's settings, as OpenAI's does."""
    tools = request.get("tools")
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "error": error,
        "incomplete_details": incomplete_details,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": model,
        "output": output,
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": request.get("previous_response_id"),
        "reasoning": request.get("reasoning"),
        "temperature": request.get("temperature"),
        "text": request.get("text") or {"format": {"type": "text"}},
        "tool_choice": request.get("tool_choice") or "auto",
        # Only the tools the upstream actually saw: the others were dropped.
        "tools": [tool for tool in tools if isinstance(tool, dict) and tool.get("type") == "function"]
        if isinstance(tools, list)
        else [],
        "top_p": request.get("top_p"),
        "user": request.get("user"),
        "metadata": request.get("metadata") or {},
        "usage": usage,
    }


def responses_usage(usage: Any) -> dict[str, Any] | None:
    """Both APIs count cached tokens inside input and reasoning inside output."""
    if not isinstance(usage, dict):
        return None
    prompt = token_count(usage.get("prompt_tokens"))
    completion = token_count(usage.get("completion_tokens"))
    prompt_details = _details(usage, "prompt_tokens_details")
    cached = token_count(prompt_details.get("cached_tokens"))
    cache_write = token_count(prompt_details.get("cache_write_tokens"))
    reasoning = token_count(_details(usage, "completion_tokens_details").get("reasoning_tokens"))
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": cache_write},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": token_count(usage.get("total_tokens")) or prompt + completion,
    }


def _details(usage: dict[str, Any], name: str) -> dict[str, Any]:
    return _obj(usage.get(name))


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _status(finish_reason: Any) -> tuple[str, dict[str, Any] | None]:
    if finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish_reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def _reasoning_text(message: dict[str, Any]) -> str:
    # vLLM, DeepSeek and most compatible APIs say reasoning_content; OpenRouter and Ollama say reasoning.
    for key in ("reasoning_content", "reasoning"):
        if isinstance(message.get(key), str) and message[key]:
            return str(message[key])
    return ""


class _ItemIds:
    def __init__(self, response_id: str) -> None:
        self.suffix = response_id.removeprefix("resp_")

    def make(self, prefix: str, output_index: int) -> str:
        return f"{prefix}_{self.suffix}_{output_index}"


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": []}


def _refusal_part(refusal: str) -> dict[str, Any]:
    return {"type": "refusal", "refusal": refusal}


def _reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    return {"type": "reasoning", "id": item_id, "summary": [{"type": "summary_text", "text": text}]}


def _message_item(item_id: str, parts: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": parts}


def _function_call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


# --- streamed answer ----------------------------------------------------


class ChatToResponsesStream:
    """chat.completion.chunk dicts in, Responses stream events out.

    One output item is open at a time, except function calls, which stay open
    until the finish because a chat upstream may interleave their argument
    deltas. `reasoning_content` deltas become a reasoning item with summary
    events (what OpenAI streams for its own reasoning models).

    The usage chunk comes after the finish_reason chunk, so the final
    `response.completed` (or `response.incomplete` when the answer hit its
    token limit or a content filter) waits for it, or for close(). When the
    upstream stream breaks off before a finish_reason, close() ends the open
    items as incomplete and sends `response.failed` with a server_error: the
    SDK accepts it, and get_final_response() then raises just as it does when
    OpenAI itself fails a response.
    """

    def __init__(self, *, model: str, response_id: str, created_at: int, request: dict[str, Any]) -> None:
        self._model = model
        self._response_id = response_id
        self._created_at = created_at
        self._request = request
        self._ids = _ItemIds(response_id)
        self._sequence = 0
        self._started = False
        self._ended = False
        self._output: list[dict[str, Any]] = []  # every item as last announced; position = output_index
        self._reasoning: int | None = None  # output_index of the open reasoning item
        self._message: int | None = None  # output_index of the open message item
        self._parts: list[dict[str, Any]] = []  # the open message's content parts
        self._calls: dict[int, int] = {}  # chat tool call index -> output_index
        self._open_calls: list[int] = []
        self._had_message_or_call = False
        self._finish_reason: str | None = None
        self._usage: dict[str, Any] | None = None

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        if self._ended:
            return []
        events = self._start()
        if isinstance(event.get("error"), dict):
            return events + self._fail(str(event["error"].get("message") or "The upstream reported an error."))
        for choice in event.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # the Responses API has no n: the first choice is the answer
            if self._finish_reason is not None:
                continue  # the items are closed; nothing may follow the finish but usage
            delta = choice.get("delta")
            events += self._delta(delta if isinstance(delta, dict) else {})
            if choice.get("finish_reason"):
                events += self._finish(str(choice["finish_reason"]))
        if isinstance(event.get("usage"), dict):
            self._usage = responses_usage(event["usage"])
        if self._finish_reason is not None and self._usage is not None:
            events += self._end()
        return events

    def close(self) -> list[dict[str, Any]]:
        if self._ended:
            return []
        events = self._start()
        if self._finish_reason is None:
            return events + self._fail("The upstream stream ended before the answer was complete.")
        return events + self._end()

    # -- lifecycle --

    def _emit(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def _snapshot(self, status: str, **extra: Any) -> dict[str, Any]:
        output = [dict(item) for item in self._output]
        usage = self._usage if status != "in_progress" else None
        return response_object(
            self._response_id,
            self._created_at,
            self._model,
            self._request,
            status=status,
            output=output,
            usage=usage,
            **extra,
        )

    def _start(self) -> list[dict[str, Any]]:
        if self._started:
            return []
        self._started = True
        return [
            self._emit("response.created", response=self._snapshot("in_progress")),
            self._emit("response.in_progress", response=self._snapshot("in_progress")),
        ]

    def _finish(self, finish_reason: str) -> list[dict[str, Any]]:
        self._finish_reason = finish_reason
        events = self._close_reasoning() + self._close_message()
        if not self._had_message_or_call:
            # As in the non-streamed answer: an answer without text or calls still has its (empty) message.
            events += self._open_message() + self._open_part("output_text") + self._close_message()
        return events + self._close_calls()

    def _end(self) -> list[dict[str, Any]]:
        self._ended = True
        status, incomplete = _status(self._finish_reason)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return [self._emit(kind, response=self._snapshot(status, incomplete_details=incomplete))]

    def _fail(self, message: str) -> list[dict[str, Any]]:
        self._finish_reason = self._finish_reason or "error"
        events = self._close_reasoning() + self._close_message() + self._close_calls()
        self._ended = True
        error = {"code": "server_error", "message": message}
        return events + [self._emit("response.failed", response=self._snapshot("failed", error=error))]

    def _item_status(self) -> str:
        if self._finish_reason is None:
            return "completed"  # closed because the model moved on to the next item
        finished = self._finish_reason != "error" and _status(self._finish_reason)[0] == "completed"
        return "completed" if finished else "incomplete"

    def _add_item(self, item: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self._output.append(item)
        index = len(self._output) - 1
        return index, self._emit("response.output_item.added", output_index=index, item=dict(item))

    def _done_item(self, index: int, item: dict[str, Any]) -> dict[str, Any]:
        self._output[index] = item
        return self._emit("response.output_item.done", output_index=index, item=item)

    # -- deltas --

    def _delta(self, delta: dict[str, Any]) -> list[dict[str, Any]]:
        events = []
        reasoning = _reasoning_text(delta)
        if reasoning:
            events += self._reasoning_delta(reasoning)
        for kind, key in (("output_text", "content"), ("refusal", "refusal")):
            if isinstance(delta.get(key), str) and delta[key]:
                events += self._message_delta(kind, delta[key])
        for call in delta.get("tool_calls") or []:
            if isinstance(call, dict):
                events += self._call_delta(call)
        return events

    def _reasoning_delta(self, text: str) -> list[dict[str, Any]]:
        events = []
        if self._reasoning is None:
            events += self._close_message()
            item = {"type": "reasoning", "id": self._ids.make("rs", len(self._output)), "summary": []}
            self._reasoning, added = self._add_item(item)
            events.append(added)
            part_added = self._emit("response.reasoning_summary_part.added", **self._reasoning_ref(), part=_summary(""))
            events.append(part_added)
        self._output[self._reasoning]["summary"] = [_summary(self._reasoning_so_far() + text)]
        events.append(self._emit("response.reasoning_summary_text.delta", **self._reasoning_ref(), delta=text))
        return events

    def _reasoning_ref(self) -> dict[str, Any]:
        assert self._reasoning is not None
        item_id = self._output[self._reasoning]["id"]
        return {"item_id": item_id, "output_index": self._reasoning, "summary_index": 0}

    def _reasoning_so_far(self) -> str:
        assert self._reasoning is not None
        summary = self._output[self._reasoning]["summary"]
        return str(summary[0]["text"]) if summary else ""

    def _close_reasoning(self) -> list[dict[str, Any]]:
        if self._reasoning is None:
            return []
        ref, text = self._reasoning_ref(), self._reasoning_so_far()
        item = {**self._output[self._reasoning], "summary": [_summary(text)]}
        events = [
            self._emit("response.reasoning_summary_text.done", **ref, text=text),
            self._emit("response.reasoning_summary_part.done", **ref, part=_summary(text)),
            self._done_item(self._reasoning, item),
        ]
        self._reasoning = None
        return events

    def _message_delta(self, kind: str, text: str) -> list[dict[str, Any]]:
        events = self._close_reasoning()
        if self._message is None:
            events += self._open_message()
        index = next((i for i, part in enumerate(self._parts) if part["type"] == kind), None)
        if index is None:
            events += self._open_part(kind)
            index = len(self._parts) - 1
        field = "text" if kind == "output_text" else "refusal"
        self._parts[index][field] += text
        ref = self._message_ref(index)
        if kind == "output_text":
            events.append(self._emit("response.output_text.delta", **ref, delta=text, logprobs=[]))
        else:
            events.append(self._emit("response.refusal.delta", **ref, delta=text))
        return events

    def _open_message(self) -> list[dict[str, Any]]:
        self._had_message_or_call = True
        item_id = self._ids.make("msg", len(self._output))
        self._message, added = self._add_item(_message_item(item_id, [], "in_progress"))
        self._parts = []
        return [added]

    def _open_part(self, kind: str) -> list[dict[str, Any]]:
        part = _text_part("") if kind == "output_text" else _refusal_part("")
        self._parts.append(part)
        ref = self._message_ref(len(self._parts) - 1)
        return [self._emit("response.content_part.added", **ref, part=dict(part))]

    def _message_ref(self, content_index: int) -> dict[str, Any]:
        assert self._message is not None
        item_id = self._output[self._message]["id"]
        return {"item_id": item_id, "output_index": self._message, "content_index": content_index}

    def _close_message(self) -> list[dict[str, Any]]:
        if self._message is None:
            return []
        events = []
        for index, part in enumerate(self._parts):
            ref = self._message_ref(index)
            if part["type"] == "output_text":
                events.append(self._emit("response.output_text.done", **ref, text=part["text"], logprobs=[]))
            else:
                events.append(self._emit("response.refusal.done", **ref, refusal=part["refusal"]))
            events.append(self._emit("response.content_part.done", **ref, part=dict(part)))
        item = {**self._output[self._message], "status": self._item_status(), "content": self._parts}
        events.append(self._done_item(self._message, item))
        self._message = None
        return events

    def _call_delta(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        events = []
        index_given = call.get("index")
        chat_index = index_given if isinstance(index_given, int) else len(self._calls)
        function = _obj(call.get("function"))
        name = _str(function.get("name"))
        if chat_index not in self._calls:
            events += self._close_reasoning() + self._close_message()
            self._had_message_or_call = True
            item_id = self._ids.make("fc", len(self._output))
            call_id = call.get("id") or f"call_{chat_index}"
            index, added = self._add_item(_function_call_item(item_id, call_id, name, "", "in_progress"))
            self._calls[chat_index] = index
            self._open_calls.append(index)
            events.append(added)
        elif name and not self._output[self._calls[chat_index]]["name"]:
            self._output[self._calls[chat_index]]["name"] = name
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            index = self._calls[chat_index]
            self._output[index]["arguments"] += arguments
            ref = {"item_id": self._output[index]["id"], "output_index": index}
            events.append(self._emit("response.function_call_arguments.delta", **ref, delta=arguments))
        return events

    def _close_calls(self) -> list[dict[str, Any]]:
        events = []
        for index in self._open_calls:
            item = {**self._output[index], "status": self._item_status()}
            ref = {"item_id": item["id"], "output_index": index}
            events.append(self._emit("response.function_call_arguments.done", **ref, arguments=item["arguments"]))
            events.append(self._done_item(index, item))
        self._open_calls = []
        return events


def _summary(text: str) -> dict[str, Any]:
    return {"type": "summary_text", "text": text}
