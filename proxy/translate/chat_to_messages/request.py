"""Chat-completions requests for Anthropic Messages upstreams (chat -> Messages).

What Anthropic cannot express at all (n > 1, audio input, a tool call whose
arguments are not JSON) is a TranslationError; what it can only approximate
or must drop becomes a note.
"""

from typing import Any

import orjson

from proxy.translate import Translated, TranslationError, note_once

# Thinking budgets for OpenAI's effort levels (1024 is Anthropic's minimum).
THINKING_BUDGETS = {"minimal": 1024, "low": 1024, "medium": 4096, "high": 16384}
# Sampling and output options Anthropic has no equivalent for; their default
# values (None, False, 0, {}) change nothing, so only other values get a note.
_UNSUPPORTED = ("logprobs", "top_logprobs", "presence_penalty", "frequency_penalty", "seed", "logit_bias")
_HANDLED = {
    "model",
    "messages",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "temperature",
    "top_p",
    "top_k",
    "user",
    "reasoning_effort",
    "stream",
    "stream_options",
    "n",
    "response_format",
    *_UNSUPPORTED,
}


def chat_request_to_messages(body: dict[str, Any], *, upstream_model: str, default_max_tokens: int) -> Translated:
    """A chat-completions body as a Messages body for `upstream_model`."""
    notes: list[str] = []
    if isinstance(body.get("n"), int) and body["n"] > 1:
        raise TranslationError("n > 1 is not supported by Anthropic models: send n separate requests", param="n")
    system, messages = _messages(body.get("messages"), notes)
    out: dict[str, Any] = {"model": upstream_model}
    if system is not None:
        out["system"] = system
    out["messages"] = messages
    _tools(body, out, notes)
    _limits_and_sampling(body, out, notes, default_max_tokens)
    if body.get("user") is not None:
        out["metadata"] = {"user_id": str(body["user"])}
    if body.get("stream") is not None:
        out["stream"] = bool(body["stream"])
    _dropped(body, notes)
    return Translated(body=out, notes=notes)


def _messages(raw: Any, notes: list[str]) -> tuple[str | list[dict[str, Any]] | None, list[dict[str, Any]]]:
    if not isinstance(raw, list) or not raw:
        raise TranslationError("messages must be a non-empty list", param="messages")
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []  # {"role", "content": [blocks]}, same roles merged
    for i, message in enumerate(raw):
        if not isinstance(message, dict):
            raise TranslationError(f"messages[{i}] must be an object", param=f"messages[{i}]")
        role = message.get("role")
        if role in ("system", "developer"):
            if turns:
                note_once(notes, "moved: system message inside the conversation -> system")
            system += _text_blocks(message.get("content"), f"messages[{i}].content")
            continue
        role, blocks = _turn(message, i, notes)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += blocks  # Anthropic requires alternating roles
        else:
            turns.append({"role": role, "content": blocks})
    return _system(system), [_compact(turn) for turn in turns]


def _turn(message: dict[str, Any], i: int, notes: list[str]) -> tuple[str, list[dict[str, Any]]]:
    role = message.get("role")
    for key, value in message.items():
        if key not in ("role", "content", "tool_calls", "tool_call_id") and value is not None:
            note_once(notes, f"dropped: messages[].{key}")
    if role == "user":
        return "user", _content_blocks(message.get("content"), f"messages[{i}].content")
    if role == "assistant":
        blocks = _content_blocks(message.get("content"), f"messages[{i}].content")
        return "assistant", blocks + _tool_uses(message.get("tool_calls"), i)
    if role == "tool":
        result: dict[str, Any] = {"type": "tool_result", "tool_use_id": str(message.get("tool_call_id") or "")}
        content = message.get("content")
        result["content"] = content if isinstance(content, str) else _text_blocks(content, f"messages[{i}].content")
        return "user", [result]
    raise TranslationError(f"messages[{i}].role '{role}' is not supported", param=f"messages[{i}].role")


def _content_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise TranslationError(f"{where} must be a string or a list of parts", param=where)
    blocks = []
    for j, part in enumerate(content):
        block = _part(part, f"{where}[{j}]")
        if block is not None:
            blocks.append(block)
    return blocks


def _part(part: Any, where: str) -> dict[str, Any] | None:
    if not isinstance(part, dict):
        raise TranslationError(f"{where} must be an object", param=where)
    kind = part.get("type")
    if kind in ("text", "refusal"):
        text = part.get(kind)
        if not isinstance(text, str):
            raise TranslationError(f"{where}.{kind} must be a string", param=where)
        if not text:
            return None  # Anthropic rejects empty text blocks
        block: dict[str, Any] = {"type": "text", "text": text}
        if isinstance(part.get("cache_control"), dict):  # an extension some clients send for Claude
            block["cache_control"] = part["cache_control"]
        return block
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        return {"type": "image", "source": _source(url, where, pdf=False)}
    if kind == "file":
        file = part.get("file")
        data = file.get("file_data") if isinstance(file, dict) else None
        return {"type": "document", "source": _source(data, where, pdf=True)}
    raise TranslationError(f"{where}.type '{kind}' is not supported by Anthropic models", param=where)


def _source(url: Any, where: str, *, pdf: bool) -> dict[str, str]:
    """An image or PDF as Anthropic's base64 or url source."""
    if isinstance(url, str) and url.startswith("data:"):
        header, _, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if encoding == "base64" and data and (media_type == "application/pdf" or not pdf):
            return {"type": "base64", "media_type": media_type, "data": data}
    elif isinstance(url, str) and url.startswith(("https://", "http://")) and not pdf:
        return {"type": "url", "url": url}
    wanted = "a base64 data URL of a PDF" if pdf else "an http(s) URL or a base64 data URL"
    raise TranslationError(f"{where} must be {wanted}", param=where)


def _text_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    blocks = _content_blocks(content, where)
    if any(block["type"] != "text" for block in blocks):
        raise TranslationError(f"{where} may only hold text here", param=where)
    return blocks


def _tool_uses(calls: Any, i: int) -> list[dict[str, Any]]:
    blocks = []
    for j, call in enumerate(calls if isinstance(calls, list) else ()):
        function = call.get("function") if isinstance(call, dict) else None
        where = f"messages[{i}].tool_calls[{j}]"
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise TranslationError(f"{where}.function.name is required", param=where)
        arguments = function.get("arguments") or "{}"  # some clients send "" for no arguments
        try:
            parsed = orjson.loads(arguments)
        except (orjson.JSONDecodeError, TypeError):
            raise TranslationError(f"{where}.function.arguments is not valid JSON", param=where) from None
        if not isinstance(parsed, dict):
            raise TranslationError(f"{where}.function.arguments is not a JSON object", param=where)
        blocks.append({"type": "tool_use", "id": str(call.get("id") or ""), "name": function["name"], "input": parsed})
    return blocks


def _system(blocks: list[dict[str, Any]]) -> str | list[dict[str, Any]] | None:
    if not blocks:
        return None
    if any("cache_control" in block for block in blocks):
        return blocks  # cache breakpoints only survive as blocks
    return "\n\n".join(block["text"] for block in blocks)


def _compact(turn: dict[str, Any]) -> dict[str, Any]:
    """One plain text block reads better (and caches the same) as a string."""
    blocks = turn["content"]
    if len(blocks) == 1 and blocks[0].keys() == {"type", "text"}:
        return {"role": turn["role"], "content": blocks[0]["text"]}
    return turn


def _tools(body: dict[str, Any], out: dict[str, Any], notes: list[str]) -> None:
    tools = body.get("tools")
    if not tools:
        if body.get("tool_choice") is not None:
            note_once(notes, "dropped: tool_choice (no tools)")
        return
    out["tools"] = [_tool(tool, i, notes) for i, tool in enumerate(tools)]
    choice = _tool_choice(body.get("tool_choice"))
    if body.get("parallel_tool_calls") is False and choice.get("type") != "none":
        choice = {**choice, "disable_parallel_tool_use": True}
    if body.get("tool_choice") is not None or len(choice) > 1:
        out["tool_choice"] = choice


def _tool(tool: Any, i: int, notes: list[str]) -> dict[str, Any]:
    function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise TranslationError(f"tools[{i}] must be a function tool with a name", param=f"tools[{i}]")
    out: dict[str, Any] = {"name": function["name"]}
    if function.get("description"):
        out["description"] = function["description"]
    out["input_schema"] = function.get("parameters") or {"type": "object", "properties": {}}
    if function.get("strict"):
        note_once(notes, "dropped: tools[].function.strict")
    return out


def _tool_choice(choice: Any) -> dict[str, Any]:
    if choice is None or choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    function = choice.get("function") if isinstance(choice, dict) else None
    if isinstance(function, dict) and isinstance(function.get("name"), str):
        return {"type": "tool", "name": function["name"]}
    raise TranslationError("tool_choice must be auto, required, none or a function", param="tool_choice")


def _limits_and_sampling(body: dict[str, Any], out: dict[str, Any], notes: list[str], default_max: int) -> None:
    asked = body.get("max_completion_tokens") or body.get("max_tokens")
    out["max_tokens"] = asked if isinstance(asked, int) and asked > 0 else default_max
    if body.get("stop"):
        out["stop_sequences"] = [body["stop"]] if isinstance(body["stop"], str) else list(body["stop"])
    thinking = _thinking(body.get("reasoning_effort"), out, notes, capped=out["max_tokens"] == asked)
    temperature = body.get("temperature")
    if isinstance(temperature, (int, float)) and not isinstance(temperature, bool):
        if thinking and temperature != 1:
            note_once(notes, "dropped: temperature (thinking needs the default)")
        elif temperature > 1:
            out["temperature"] = 1
            note_once(notes, f"clamped: temperature {temperature} -> 1")
        else:
            out["temperature"] = temperature
    top_p = body.get("top_p")
    # top_p = 1 samples from everything, the default; some Claude models
    # refuse temperature and top_p together, so the no-op is left out.
    if isinstance(top_p, (int, float)) and top_p != 1:
        if thinking and top_p < 0.95:
            note_once(notes, "dropped: top_p (thinking needs 0.95 or more)")
        else:
            out["top_p"] = top_p
    if isinstance(body.get("top_k"), int):
        if thinking:
            note_once(notes, "dropped: top_k (thinking forbids it)")
        else:
            out["top_k"] = body["top_k"]


def _thinking(effort: Any, out: dict[str, Any], notes: list[str], *, capped: bool) -> bool:
    """Extended thinking for a reasoning effort; True when it is on.

    The thinking budget counts inside Anthropic's max_tokens. A client's own
    limit is kept (the spend guard reserved for it), so the budget shrinks to
    fit; without one, max_tokens grows to leave the default for the answer.
    """
    if effort is None or effort == "none":
        return False
    if effort not in THINKING_BUDGETS:
        raise TranslationError(
            f"reasoning_effort '{effort}' is not one of {', '.join(THINKING_BUDGETS)}", param="reasoning_effort"
        )
    budget = THINKING_BUDGETS[effort]
    if out["max_tokens"] <= budget:
        if capped:
            budget = out["max_tokens"] - 1
        else:
            out["max_tokens"] += budget
    if budget < THINKING_BUDGETS["low"]:
        note_once(notes, f"dropped: reasoning_effort={effort} (max_tokens too small for thinking)")
        return False
    out["thinking"] = {"type": "enabled", "budget_tokens": budget}
    note_once(notes, f"mapped: reasoning_effort={effort} -> thinking.budget_tokens={budget}")
    return True


def _dropped(body: dict[str, Any], notes: list[str]) -> None:
    for key in _UNSUPPORTED:
        if body.get(key) not in (None, False, 0, {}):
            note_once(notes, f"dropped: {key}")
    response_format = body.get("response_format")
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind not in (None, "text"):
        note_once(notes, f"dropped: response_format={kind}")
    for key in body:
        if key not in _HANDLED and body[key] is not None:
            note_once(notes, f"dropped: {key}")
