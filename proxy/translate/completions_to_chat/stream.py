"""Chat-completions stream chunks as legacy text_completion chunks (chat ->
completions), for a legacy completions client on a chat upstream."""

from typing import Any

from proxy.translate.completions_to_chat.answer_parts import completion_choice


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
                choices.append(completion_choice(choice, position, text))
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
