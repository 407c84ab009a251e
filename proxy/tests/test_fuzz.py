"""Fuzzing the public /v1 API from its own OpenAPI schema: no input is a 500.

Schemathesis generates valid and invalid requests for every operation the
gateway publishes at /v1/openapi.json and sends them to the real gateway
(daphne, fake upstream). Every answer must be a non-5xx, and every refusal
JSON in the envelope of the API that was called.

CI runs a short pass (FUZZ_EXAMPLES=30 per operation and mode, the same
examples every run); `make fuzz` runs a long, random one (FUZZ_EXAMPLES=2000).
A failure prints the request to replay as a curl line.

Schemathesis' own pytest loader (`schemathesis.pytest.from_fixture`) fails
under pytest 9.2 (it reads `Function._nodeid`, which is gone), so the tests
draw cases from its strategies with hypothesis and report each operation as
a pytest subtest.
"""

import json
import os
import urllib.request
from collections.abc import Callable
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis import APIOperation, Case, CheckContext, GenerationMode, Response
from schemathesis.checks import not_a_server_error

from conftest import IssuedKey
from proxy.tests.live import LiveGateway

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "30"))
LONG_RUN = FUZZ_EXAMPLES > 100
REQUEST_TIMEOUT_SECONDS = 10  # the gateway's upstream read timeout is 2 s in tests
# A model the fake upstream answers: random names only ever reach the 404 of
# the router, so some bodies get this one and go all the way upstream.
ROUTED_MODEL = "gpt-test"

pytestmark = pytest.mark.fuzz


def _json_object(**properties: Any) -> dict[str, Any]:
    schema = {"type": "object", "required": list(properties), "additionalProperties": True, "properties": properties}
    return {"required": True, "content": {"application/json": {"schema": schema}}}


_TEXT = {"type": "string", "minLength": 1}
_MESSAGES = {"type": "array", "minItems": 1, "items": {"type": "object"}}
# Operations that read request.body themselves publish no request body, so
# schemathesis would only send them an empty one. Until they declare it, the
# fuzz adds what their parsers require (the rest of a body is free-form).
_UNDECLARED_BODIES: dict[str, dict[str, Any]] = {
    "/v1/embeddings": _json_object(
        model=_TEXT,
        input={
            "anyOf": [
                _TEXT,
                {"type": "array", "minItems": 1, "items": {"type": "string"}},
                {"type": "array", "minItems": 1, "items": {"type": "integer"}},
            ]
        },
    ),
    "/v1/completions": _json_object(model=_TEXT, prompt={"anyOf": [{"type": "string"}, {"type": "array"}]}),
    "/v1/responses": _json_object(model=_TEXT, input={"anyOf": [_TEXT, {"type": "array", "minItems": 1}]}),
    "/v1/messages": _json_object(model=_TEXT, messages=_MESSAGES, max_tokens={"type": "integer", "minimum": 1}),
    "/v1/messages/count_tokens": _json_object(model=_TEXT, messages=_MESSAGES),
}

fuzz_settings = hypothesis.settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None if LONG_RUN else 5000,  # ms per example; a slow machine must not fail the long run
    derandomize=not LONG_RUN,  # CI: the same examples every run, so a red build is a finding, not luck
    database=None,  # no .hypothesis/ directory in the tree
    suppress_health_check=list(hypothesis.HealthCheck),  # the examples are HTTP calls: slow by nature
    print_blob=True,
)
run_timeout = pytest.mark.timeout(0 if LONG_RUN else 300)
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)


def published_schema(gateway: LiveGateway) -> dict[str, Any]:
    with urllib.request.urlopen(gateway.url + "/v1/openapi.json", timeout=REQUEST_TIMEOUT_SECONDS) as response:
        raw: dict[str, Any] = json.loads(response.read())
    for path, body in _UNDECLARED_BODIES.items():
        operation = raw["paths"].get(path, {}).get("post")
        if operation is not None and "requestBody" not in operation:
            operation["requestBody"] = body
    return raw


def operations(gateway: LiveGateway, *, generate_keys: bool) -> list[APIOperation]:
    """The published operations; `generate_keys`: also generate (and break) the Authorization header."""
    config = schemathesis.Config.from_dict({"generation": {"with-security-parameters": generate_keys}})
    schema = schemathesis.openapi.from_dict(published_schema(gateway), config=config)
    return [result.ok() for result in schema.get_all_operations()]


def takes_input(operation: APIOperation) -> bool:
    """Whether there is anything to send wrong (without it, negative mode has
    nothing to generate). Any string is a valid id in a path, so a path of
    plain string ids alone has no wrong value to send."""
    parts = (operation.headers, operation.query, operation.cookies, operation.body)
    constrained = [p for p in operation.path_parameters if not _any_string(p.definition.get("schema", {}))]
    return bool(constrained) or any(len(part) for part in parts)


def _any_string(schema: dict[str, Any]) -> bool:
    return {k: v for k, v in schema.items() if k not in ("title", "description")} == {"type": "string"}


def cases(operation: APIOperation, mode: GenerationMode) -> st.SearchStrategy[Case]:
    """The operation's cases; in half of those whose body names a model, a
    model the fake upstream answers, so they go all the way through."""

    def routed(case: Case, route: bool) -> Case:
        if route and isinstance(case.body, dict) and "model" in case.body:
            case.body = {**case.body, "model": ROUTED_MODEL}
        return case

    return st.builds(routed, operation.as_strategy(generation_mode=mode), st.booleans())


def fuzz(operation: APIOperation, mode: GenerationMode, send: Callable[[Case], None], examples: int) -> None:
    @hypothesis.settings(fuzz_settings, max_examples=examples)
    @hypothesis.given(case=cases(operation, mode))
    def run(case: Case) -> None:
        send(case)

    run()


def is_anthropic(path: str) -> bool:
    return path.startswith("/v1/messages")


def header(response: Response, name: str) -> str:
    return response.headers.get(name, [""])[0]


def error_envelope(ctx: CheckContext, response: Response, case: Case) -> None:
    """A refusal is JSON in the envelope of the API that was called, with a stable code."""
    if response.status_code < 400:
        return
    content_type = header(response, "content-type")
    assert content_type.startswith("application/json"), f"an error as {content_type!r}, not JSON"
    body = json.loads(response.content)
    if is_anthropic(case.path):
        assert set(body) == {"type", "error"} and body["type"] == "error", body
        assert set(body["error"]) == {"type", "message"}, body
    else:
        assert set(body) == {"error"}, body
        assert set(body["error"]) == {"message", "type", "param", "code"}, body
        assert isinstance(body["error"]["code"], str) and body["error"]["code"], body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body


def answer_content_type(ctx: CheckContext, response: Response, case: Case) -> None:
    """Success is JSON, or an event stream when the client asked for one."""
    if response.status_code >= 400:
        return
    content_type = header(response, "content-type")
    assert content_type.startswith(("application/json", "text/event-stream")), f"an answer as {content_type!r}"


def request_id(ctx: CheckContext, response: Response, case: Case) -> None:
    assert header(response, "x-request-id").startswith("req_"), "no x-request-id"


CHECKS: list[Callable[..., Any]] = [not_a_server_error, error_envelope, answer_content_type, request_id]


@run_timeout
@pytest.mark.parametrize("mode", MODES, ids=str)
def test_no_request_with_a_valid_key_makes_the_gateway_fail(
    live_gateway: LiveGateway, key: IssuedKey, mode: GenerationMode, subtests: pytest.Subtests
) -> None:
    def send(case: Case) -> None:
        case.call_and_validate(
            base_url=live_gateway.url, headers=key.headers, checks=CHECKS, timeout=REQUEST_TIMEOUT_SECONDS
        )

    # Generated key headers (random, or dropped in negative mode) would win
    # over ours and make this the no-key test, so none are generated.
    for operation in operations(live_gateway, generate_keys=False):
        if mode is GenerationMode.NEGATIVE and not takes_input(operation):
            continue
        with subtests.test(operation=operation.label):
            fuzz(operation, mode, send, FUZZ_EXAMPLES)


@run_timeout
@pytest.mark.parametrize("mode", MODES, ids=str)
def test_a_request_without_a_valid_key_is_refused_in_the_envelope(
    live_gateway: LiveGateway, mode: GenerationMode, subtests: pytest.Subtests
) -> None:
    # The generated Authorization header is random, or missing: never one of ours.
    def send(case: Case) -> None:
        response = case.call(base_url=live_gateway.url, timeout=REQUEST_TIMEOUT_SECONDS)
        case.validate_response(response, checks=CHECKS)
        assert response.status_code == 401, (response.status_code, response.content[:300])

    for operation in operations(live_gateway, generate_keys=True):
        with subtests.test(operation=operation.label):
            fuzz(operation, mode, send, max(FUZZ_EXAMPLES // 3, 10))
