"""Legacy completions requests (`POST /v1/completions`) as chat completions
(completions -> chat), for upstreams without the legacy endpoint (Anthropic,
most hosted chat models).

The prompt becomes one user message. A chat model answers the prompt rather
than continuing it, so every request says so in a note. What the chat API
cannot reproduce (echo, suffix, logprobs, best_of, several prompts in one
request) is refused rather than silently answered wrong.
"""

from typing import Any

from proxy.translate import Translated, TranslationError

_PASSED = ("stop", "temperature", "top_p", "n", "user", "presence_penalty", "frequency_penalty", "seed", "logit_bias")
# The legacy API's default; chat upstreams would otherwise write until their own limit.
_LEGACY_MAX_TOKENS = 16


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
