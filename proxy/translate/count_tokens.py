"""The Anthropic count_tokens API's answer when no upstream can count: an
estimate (proxy.pipeline answers /v1/messages/count_tokens with it, and a
translated Messages stream starts with it as its input_tokens)."""

from typing import Any

from gateway.kernel.context import estimate_tokens
from proxy.translate.json_values import Json, as_list, as_obj, as_str, compact_json

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
    messages = as_list(body.get("messages"))
    for message in messages:
        tally.extra += TOKENS_PER_MESSAGE
        if isinstance(message, dict):
            tally.content(message.get("content"))
    tools = as_list(body.get("tools"))
    for tool in tools:
        tally.chars += len(compact_json(tool))
    return estimate_tokens(tally.chars) + tally.extra


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
                self.chars += len(as_str(block.get("name")))
                self.chars += len(compact_json(block.get("input")))
            case "tool_result":
                self.content(block.get("content"))
            case "document":
                source = as_obj(block.get("source"))
                if source.get("type") in ("text", "content"):
                    self.content(source.get("data") if source.get("type") == "text" else source.get("content"))
                else:
                    self.extra += TOKENS_PER_PDF
