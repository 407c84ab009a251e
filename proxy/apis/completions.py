"""OpenAI's legacy completions: native where the provider still serves it, else through chat."""

from typing import Any

from gateway.kernel.errors import invalid_request
from proxy.apis.spec import CHAT_STREAM, ClientSide, DialectSpec, HubNames
from proxy.apis.texts import ApiTexts, Piece, Slot, finished_choices, items, string, strings
from proxy.dialects import ClientCall, Dialect, json_object_with_model, positive_int, stream_flag


def completions_call(raw: bytes) -> ClientCall:
    body = json_object_with_model(raw, "completion request")
    prompt = body.get("prompt")
    if not isinstance(prompt, (str, list)):
        raise invalid_request("'prompt' is required: a string or an array.", param="prompt")
    limit = positive_int(body, "max_tokens")
    # The legacy API's default is 16 tokens; n and best_of multiply it.
    choices = max(
        (v for v in (body.get("n"), body.get("best_of")) if isinstance(v, int) and not isinstance(v, bool)), default=1
    )
    return ClientCall(Dialect.COMPLETIONS, body, len(raw), stream_flag(body), (limit or 16) * max(choices, 1))


def _wants_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _client_side(call: ClientCall, names: HubNames) -> ClientSide:
    from proxy.translate.completions_to_chat.request import completions_request_to_chat
    from proxy.translate.completions_to_chat.response import chat_response_to_completion
    from proxy.translate.completions_to_chat.stream import ChatToCompletionsStream

    model, body = names.public_model, call.body
    completion_id = "cmpl-" + names.completion_id
    return ClientSide(
        completions_request_to_chat,
        lambda data: chat_response_to_completion(data, model=model),
        lambda: ChatToCompletionsStream(
            model=model, completion_id=completion_id, created=names.created, include_usage=_wants_usage(body)
        ),
    )


def _answer(body: dict[str, Any]) -> list[Slot]:
    return [slot for choice in items(body.get("choices")) for slot in string(choice, "text")]


def _stream(event: dict[str, Any]) -> list[Piece]:
    return [
        (choice.get("index", 0), slot)
        for choice in items(event.get("choices"))
        if isinstance(choice, dict)
        for slot in string(choice, "text")
    ]


COMPLETIONS = DialectSpec(
    Dialect.COMPLETIONS,
    ("/v1/completions",),
    lambda raw, headers, query: completions_call(raw),
    # A prompt (or a list of them) and its suffix; no messages to frame.
    texts=ApiTexts(
        request=lambda body: [*strings(body, "prompt"), *string(body, "suffix")],
        answer=_answer,
        stream=_stream,
        stream_ends=finished_choices,
    ),
    stream=CHAT_STREAM,
    client_side=_client_side,
    translated_when_missing=True,
)
