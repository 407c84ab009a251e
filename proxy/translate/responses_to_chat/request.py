"""OpenAI Responses API requests (`POST /v1/responses`) for upstreams that
do not serve /v1/responses, as chat completions (Responses -> chat).

The Responses API can keep a conversation on OpenAI's servers
(previous_response_id, conversation, stored prompts and items); an upstream
reached through chat completions keeps nothing. The gateway keeps
translated answers itself and puts the conversation a previous_response_id
names in the input before this module sees it (proxy.responses_state); what
is left unresolved here (conversation, stored prompts, item references, or a
previous_response_id nobody resolved) is refused instead of answered
without its history.
"""

from typing import Any

from proxy.translate import Translated, TranslationError, note_once

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
                note_once(notes, f"dropped: {key}")
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
            note_once(notes, f"dropped: {key}")
    else:
        note_once(notes, f"dropped: {key}")


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
            note_once(notes, "dropped: input reasoning items")
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
            note_once(notes, f"dropped: tools.{kind}")
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
        note_once(notes, f"mapped: tool_choice.allowed_tools -> {value['mode']}")
        return value["mode"]
    note_once(notes, f"dropped: tool_choice.{kind}")
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
            note_once(notes, f"dropped: text.{key}")
