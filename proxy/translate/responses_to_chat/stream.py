"""Chat-completions stream chunks as Responses API stream events (chat ->
Responses), for a Responses client on an upstream without the API."""

from typing import Any

from proxy.translate.json_values import as_obj, as_str
from proxy.translate.reasoning import reasoning_text
from proxy.translate.responses_to_chat.answer_parts import (
    ItemIds,
    function_call_item,
    message_item,
    refusal_part,
    response_object,
    response_status,
    responses_usage,
    text_part,
)


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
        self._ids = ItemIds(response_id)
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
        status, incomplete = response_status(self._finish_reason)
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
        finished = self._finish_reason != "error" and response_status(self._finish_reason)[0] == "completed"
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
        reasoning = reasoning_text(delta)
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
        self._message, added = self._add_item(message_item(item_id, [], "in_progress"))
        self._parts = []
        return [added]

    def _open_part(self, kind: str) -> list[dict[str, Any]]:
        part = text_part("") if kind == "output_text" else refusal_part("")
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
        function = as_obj(call.get("function"))
        name = as_str(function.get("name"))
        if chat_index not in self._calls:
            events += self._close_reasoning() + self._close_message()
            self._had_message_or_call = True
            item_id = self._ids.make("fc", len(self._output))
            call_id = call.get("id") or f"call_{chat_index}"
            index, added = self._add_item(function_call_item(item_id, call_id, name, "", "in_progress"))
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
