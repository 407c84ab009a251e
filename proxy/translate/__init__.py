"""Translation between the APIs clients call and the APIs upstreams speak.

OpenAI chat completions is the hub: every other dialect translates to it and
back, so any client dialect reaches any upstream in at most two steps
(Anthropic Messages -> chat -> upstream, upstream -> chat -> Anthropic).
When the upstream speaks the client's dialect natively the body passes
through and nothing here runs.

Every translator is pure: dicts in, dicts out, no I/O. Each pair of APIs is
a package named for the way its request goes (`messages_to_chat`: an
Anthropic Messages client on a chat-completions upstream), with a module
for each part:

* `request`: the request translator, returning `Translated` (the new body
  plus notes on what had no equivalent and was dropped or approximated: the
  client sees them in the `x-gateway-translation-notes` response header;
  nothing is lost silently);
* `response`: the translator of a non-streamed answer;
* `stream`: a `StreamTranslator`, upstream events in, client events out;
* `answer_parts`: what `response` and `stream` both build their answers of.

Beside them: `count_tokens` (the Anthropic count_tokens API's estimate),
`ollama_catalog` (Ollama's model listings), and the readers every pair
shares (`json_values`, `reasoning`). This package's own module holds only
the shared types, so a process that never translates never loads the rest.

A stream event is one parsed JSON object (an SSE event's data, or one NDJSON
line). Anthropic and Responses events carry their SSE event name in their
`type` field; chat chunks have none and the `[DONE]` sentinel is the
encoder's business, not the translator's.
"""

from dataclasses import dataclass, field
from typing import Any, Protocol


class TranslationError(ValueError):
    """The request cannot be expressed in the upstream's dialect at all (not
    merely lossy): the client gets a 400 with this message."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass
class Translated:
    body: dict[str, Any]
    # Short, header-safe ASCII phrases such as "dropped: context_management"
    # or "mapped: thinking -> reasoning_effort=high".
    notes: list[str] = field(default_factory=list)


def note_once(notes: list[str], note: str) -> None:
    """Add a translation note unless the request has it already (a dropped
    field is noted once, however many messages carried it)."""
    if note not in notes:
        notes.append(note)


class StreamTranslator(Protocol):
    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """The client events one upstream event becomes (often none or one)."""

    def close(self) -> list[dict[str, Any]]:
        """The upstream stream ended, completely or not: the events that end
        the client's stream properly (stop events, final usage), if not
        already sent. Called exactly once."""
