"""Every client API has one spec in proxy.apis.registry, and what the
gateway says in an API's name (its error envelope, whether it is cached,
whether it is translated) is read from that spec."""

import orjson
import pytest

from gateway.kernel.errors import ApiFormat, GatewayError
from proxy.apis.registry import SPECS, error_format_for_path, spec_for, spec_for_path, specs_check
from proxy.dialects import Dialect

ANTHROPIC_APIS = {Dialect.MESSAGES, Dialect.COUNT_TOKENS}
OLLAMA_APIS = {Dialect.OLLAMA_CHAT, Dialect.OLLAMA_GENERATE}
REFUSAL = GatewayError(400, "invalid_request", "'model' is required.", param="model")


def envelope_of(dialect: Dialect) -> dict[str, object]:
    """The error body each API's own clients parse, written out by hand."""
    if dialect in ANTHROPIC_APIS:
        return {"type": "error", "error": {"type": "invalid_request_error", "message": "'model' is required."}}
    if dialect in OLLAMA_APIS:
        return {"error": "'model' is required.", "code": "invalid_request"}
    return {
        "error": {
            "message": "'model' is required.",
            "type": "invalid_request_error",
            "param": "model",
            "code": "invalid_request",
        }
    }


def test_every_dialect_has_a_spec_filed_under_its_own_name() -> None:
    assert set(SPECS) == set(Dialect)
    assert all(spec_for(dialect).dialect is dialect for dialect in Dialect)


def test_a_dialect_without_a_spec_is_refused_when_the_registry_loads_naming_it() -> None:
    partial = {dialect: spec for dialect, spec in SPECS.items() if dialect is not Dialect.SPEECH}

    with pytest.raises(LookupError, match=r"without a spec in proxy.apis.registry: \['audio.speech'\]"):
        specs_check(partial)


@pytest.mark.parametrize("dialect", list(Dialect), ids=str)
def test_each_apis_error_format_renders_the_envelope_its_clients_parse(dialect: Dialect) -> None:
    fmt = spec_for(dialect).error_format

    assert orjson.loads(REFUSAL.body(fmt)) == envelope_of(dialect)


@pytest.mark.parametrize("dialect", list(Dialect), ids=str)
def test_each_apis_error_inside_a_stream_is_the_event_its_clients_read(dialect: Dialect) -> None:
    event = REFUSAL.event(spec_for(dialect).error_format)

    if dialect in ANTHROPIC_APIS:
        name, data = event.removesuffix(b"\n\n").split(b"\n")
        assert name == b"event: error"
    elif dialect in OLLAMA_APIS:
        data = event.removesuffix(b"\n")
        assert b"\n" not in data  # one NDJSON line
    else:
        data = event.removesuffix(b"\n\n").removeprefix(b"data: ")
        assert event.startswith(b"data: ")
    assert orjson.loads(data.removeprefix(b"data: ")) == envelope_of(dialect)


@pytest.mark.parametrize("dialect", list(Dialect), ids=str)
def test_an_error_before_the_body_is_read_takes_the_envelope_of_the_api_its_path_names(dialect: Dialect) -> None:
    for path in spec_for(dialect).paths:
        assert spec_for_path(path) is spec_for(dialect)
        assert error_format_for_path(path) is spec_for(dialect).error_format


def test_paths_of_no_api_take_the_envelope_of_their_family() -> None:
    assert error_format_for_path("/api/tags") is ApiFormat.OLLAMA  # Ollama's routes that are not a dialect
    assert error_format_for_path("/api/unknown") is ApiFormat.OLLAMA
    assert error_format_for_path("/v1/messages/batches") is ApiFormat.ANTHROPIC
    assert error_format_for_path("/v1/models") is ApiFormat.OPENAI
    assert error_format_for_path("/cache/chat/completions") is ApiFormat.OPENAI


def test_only_chat_completions_and_embeddings_are_cached_and_the_cache_lane_serves_their_paths() -> None:
    from gateway import cache_lane

    assert {dialect for dialect, spec in SPECS.items() if spec.cacheable} == {Dialect.CHAT, Dialect.EMBEDDINGS}
    assert set(cache_lane._CACHEABLE) == {"/v1/chat/completions", "/v1/embeddings"}


def test_the_text_apis_but_embeddings_and_token_counts_reach_any_provider_through_the_hub() -> None:
    translated = {dialect for dialect, spec in SPECS.items() if spec.client_side is not None}

    assert translated == {
        Dialect.CHAT,
        Dialect.COMPLETIONS,
        Dialect.RESPONSES,
        Dialect.MESSAGES,
        Dialect.OLLAMA_CHAT,
        Dialect.OLLAMA_GENERATE,
    }
    assert all(SPECS[dialect].stream is not None for dialect in translated)  # a translated stream has a shape


@pytest.mark.parametrize(
    ("dialect", "body"),
    [
        (Dialect.CHAT, {"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
        (Dialect.EMBEDDINGS, {"model": "m", "input": "hi"}),
        (Dialect.COMPLETIONS, {"model": "m", "prompt": "hi"}),
        (Dialect.RESPONSES, {"model": "m", "input": "hi"}),
        (Dialect.MESSAGES, {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
        (Dialect.COUNT_TOKENS, {"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
        (Dialect.OLLAMA_CHAT, {"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
        (Dialect.OLLAMA_GENERATE, {"model": "m", "prompt": "hi"}),
        (Dialect.SPEECH, {"model": "m", "input": "hi", "voice": "alloy"}),
        (Dialect.IMAGES, {"model": "m", "prompt": "a cat"}),
    ],
    ids=lambda value: str(value) if isinstance(value, Dialect) else "",
)
def test_each_apis_parser_reads_its_own_request(dialect: Dialect, body: dict[str, object]) -> None:
    call = spec_for(dialect).parse(orjson.dumps(body), {"anthropic-version": "2023-06-01"}, "")

    assert call.dialect is dialect
    assert call.body["model"] == "m"
