"""OpenAI's Responses API: native where the provider has it, else through chat
with the gateway keeping the conversation (proxy.responses_state)."""

from collections.abc import Hashable, Iterator
from typing import Any

from gateway.kernel.errors import invalid_request
from proxy.apis.spec import ClientSide, DialectSpec, HubNames, StreamShape, sse_named
from proxy.apis.texts import ALL, ApiTexts, Piece, Slot, content, entries, items, parts_of, string
from proxy.dialects import ClientCall, Dialect, json_object_with_model, positive_int, stream_flag
from proxy.responses_state import conversation_body


def responses_call(raw: bytes) -> ClientCall:
    body = json_object_with_model(raw, "response request")
    text = body.get("input")
    if not (isinstance(text, str) and text) and not (isinstance(text, list) and text):
        raise invalid_request("'input' is required: a string or a non-empty array of input items.", param="input")
    limit = positive_int(body, "max_output_tokens")
    return ClientCall(Dialect.RESPONSES, body, len(raw), stream_flag(body), limit)


def _client_side(call: ClientCall, names: HubNames) -> ClientSide:
    from proxy.translate.responses_to_chat.request import responses_request_to_chat
    from proxy.translate.responses_to_chat.response import chat_response_to_responses
    from proxy.translate.responses_to_chat.stream import ChatToResponsesStream

    model, body = names.public_model, call.body
    response_id = "resp_" + names.completion_id
    return ClientSide(
        # With the stored conversation in place of previous_response_id.
        lambda body, upstream_model: responses_request_to_chat(
            conversation_body(call, native=False), upstream_model=upstream_model
        ),
        lambda data: chat_response_to_responses(
            data, model=model, response_id=response_id, created_at=names.created, request=body
        ),
        lambda: ChatToResponsesStream(model=model, response_id=response_id, created_at=names.created, request=body),
    )


def _native_body(call: ClientCall) -> dict[str, Any]:
    return conversation_body(call, native=True)  # the stored conversation, for an id the gateway resolved


def _request(body: dict[str, Any]) -> list[Slot]:
    slots = list(string(body, "instructions"))
    if isinstance(body.get("input"), str):
        slots.append((body, "input"))
    for item in items(body.get("input")):
        if isinstance(item, dict):
            slots += content(item)
            slots += string(item, "output")  # function_call_output
            slots += string(item, "arguments")  # function_call
    return slots


def _output(response: Any) -> Iterator[Slot]:
    if not isinstance(response, dict):
        return
    yield from string(response, "output_text")
    for item in items(response.get("output")):
        if isinstance(item, dict):
            for part in items(item.get("content")):
                yield from string(part, "text")


def _channel(event: dict[str, Any]) -> Hashable:
    return (event.get("output_index", 0), event.get("content_index", 0))


_ENDS = frozenset({"response.completed", "response.incomplete", "response.failed"})


def _stream(event: dict[str, Any]) -> list[Piece]:
    if event.get("type") == "response.output_text.delta":
        return [(_channel(event), slot) for slot in string(event, "delta")]
    return []


def _stream_ends(event: dict[str, Any]) -> list[Hashable] | str:
    kind = event.get("type")
    if kind == "response.output_text.done":
        return [_channel(event)]
    return ALL if kind in _ENDS else []


def _stream_echoes(event: dict[str, Any]) -> list[Slot]:
    """The `.done` events and the final response repeat the text the deltas sent."""
    kind = event.get("type")
    if kind == "response.output_text.done":
        return list(string(event, "text"))
    if kind == "response.content_part.done":
        return list(string(event.get("part"), "text"))
    if kind == "response.output_item.done":
        item = event.get("item")
        return (
            [slot for part in items(item.get("content")) for slot in string(part, "text")]
            if isinstance(item, dict)
            else []
        )
    if kind in _ENDS:
        return list(_output(event.get("response")))
    return []


_MEDIA = frozenset({"input_image", "input_file", "input_audio"})


def _media_parts(body: dict[str, Any]) -> int:
    """Media parts of the input items' content, or an input item that is one."""
    return sum(
        parts_of(item, _MEDIA) if isinstance(item.get("content"), list) else int(item.get("type") in _MEDIA)
        for item in items(body.get("input"))
        if isinstance(item, dict)
    )


# A realtime session's response.create takes the same instructions and
# input items (proxy.realtime_usage reads its prompt with these).
TEXTS = ApiTexts(
    request=_request,
    answer=lambda body: list(_output(body)),
    stream=_stream,
    stream_ends=_stream_ends,
    stream_echoes=_stream_echoes,
    turns=lambda body: entries(body, "input"),
    media_parts=_media_parts,
)
RESPONSES = DialectSpec(
    Dialect.RESPONSES,
    ("/v1/responses",),
    lambda raw, headers, query: responses_call(raw),
    texts=TEXTS,
    stream=StreamShape(sse_named),
    client_side=_client_side,
    translated_when_missing=True,
    native_body=_native_body,
)
