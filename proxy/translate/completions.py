"""Legacy completions (`POST /v1/completions`) <-> chat completions.

For upstreams without the legacy endpoint (Anthropic, most hosted chat
models): the prompt becomes one user message. A chat model answers the
prompt rather than continuing it, so every request says so in a note.
What the chat API cannot reproduce (echo, suffix, logprobs, best_of, several
prompts in one request) is refused rather than silently answered wrong.
"""

from typing import Any

from proxy.translate import Translated, TranslationError

_PASSED = ("stop", "temperature", "top_p", "n", "user", "presence_penalty", "frequency_penalty", "seed", "logit_bias")
# The legacy API's default; chat upstreams would otherwise write until their own limit.
_LEGACY_MAX_TOKENS = 16
_FINISH_REASONS = ("stop", "length", "content_filter")


def completions_request_to_chat(body: dict[str, Any], *, upstream_model: str) -> Translated:
    _refuse_what_chat_cannot_do(body)
    notes = ["mapped: prompt -> user message"]
    messages = [{"role": "user", "content": _prompt(body.get("prompt"))}]
    out: dict[str, Any] = {"model": upstream_model, "messages": messages}
    out["max_tokens"] = body["max_tokens"] if body.get("max_tokens") is not None else _LEGACY_MAX_TOKENS
    for key, value in body.items():
        if key in ("model", "prompt", "max_tokens", "suffix", "echo", "logprobs", "best_of") or value is None:
            continue
        if key in _PASSED:
            out[key] = value
        elif key == "stream":
            if value:
                out["stream"] = True
                out["stream_options"] = {"include_usage": True}
        elif key != "stream_options":  # the client's include_usage is the stream translator's business
            notes.append(f"dropped: {key}")
    return Translated(body=out, notes=notes)


def _refuse_what_chat_cannot_do(body: dict[str, Any]) -> None:
    if body.get("suffix"):
        raise TranslationError("suffix (text insertion) is not supported by this model's upstream.", param="suffix")
    if body.get("echo"):
        raise TranslationError("echo is not supported by this model's upstream.", param="echo")
    if body.get("logprobs") is not None:
        raise TranslationError("logprobs is not supported by this model's upstream.", param="logprobs")
    best_of = body.get("best_of")
    if best_of is not None and best_of != 1:
        raise TranslationError("best_of other than 1 is not supported by this model's upstream.", param="best_of")


def _prompt(prompt: Any) -> str:
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        raise TranslationError("Only one prompt per request is supported by this model's upstream.", param="prompt")
    if isinstance(prompt, list):
        raise TranslationError("Token-array prompts are not supported by this model's upstream.", param="prompt")
    raise TranslationError("prompt must be a string.", param="prompt")


def chat_response_to_completion(data: dict[str, Any], *, model: str) -> dict[str, Any]:
    choices = []
    for position, choice in enumerate(data.get("choices") or []):
        message = choice.get("message") if isinstance(choice, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        choices.append(_choice(choice, position, content if isinstance(content, str) else ""))
    completion = {
        "id": "cmpl-" + str(data.get("id") or "").removeprefix("chatcmpl-"),
        "object": "text_completion",
        "created": data.get("created") or 0,
        "model": model,
        "choices": choices,
    }
    if data.get("system_fingerprint"):
        completion["system_fingerprint"] = data["system_fingerprint"]
    if isinstance(data.get("usage"), dict):
        completion["usage"] = data["usage"]  # the same object in both APIs
    return completion


def _choice(choice: dict[str, Any], position: int, text: str) -> dict[str, Any]:
    index = choice.get("index") if isinstance(choice.get("index"), int) else position
    finish_reason = _finish_reason(choice.get("finish_reason"))
    return {"text": text, "index": index, "logprobs": None, "finish_reason": finish_reason}


def _finish_reason(reason: Any) -> str | None:
    if reason is None:
        return None
    # tool_calls cannot happen (no tools are sent); anything unknown ended normally.
    return reason if reason in _FINISH_REASONS else "stop"


class ChatToCompletionsStream:
    """chat.completion.chunk dicts in, text_completion chunks out.

    The gateway always asks the upstream for usage; the usage-only chunk is
    passed on only when the client asked for it (stream_options.include_usage).
    """

    def __init__(self, *, model: str, completion_id: str, created: int, include_usage: bool) -> None:
        self._model = model
        self._completion_id = completion_id
        self._created = created
        self._include_usage = include_usage

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        choices = []
        for position, choice in enumerate(event.get("choices") or []):
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            content = delta.get("content") if isinstance(delta, dict) else None
            text = content if isinstance(content, str) else ""
            if text or choice.get("finish_reason"):  # the role-only first chunk says nothing
                choices.append(_choice(choice, position, text))
        out = [self._chunk(choices)] if choices else []
        if self._include_usage and isinstance(event.get("usage"), dict):
            out.append({**self._chunk([]), "usage": event["usage"]})
        return out

    def close(self) -> list[dict[str, Any]]:
        return []  # every chunk is complete on its own: nothing to end

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self._completion_id,
            "object": "text_completion",
            "created": self._created,
            "model": self._model,
            "choices": choices,
        }
