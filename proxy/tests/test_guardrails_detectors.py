"""The detectors, redaction and the stream guard, without a request: pure code, no database."""

import sys
import types
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from proxy.dialects import Dialect
from proxy.guardrails.index import GuardrailRow, guardrail_index
from proxy.guardrails.pii import PiiDetector, iban_valid, luhn_valid, presidio_analyzer
from proxy.guardrails.regex import pattern_error, regex_detector
from proxy.guardrails.rules import GuardrailBlockedError, GuardrailRule, Scanner, redacted
from proxy.guardrails.stream import HeldText, StreamGuard

AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
GITHUB = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
GITHUB_PAT = "github_pat_" + "A" * 22 + "_" + "b" * 59
SLACK = "xoxb-1234567890-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"
STRIPE = "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc"
OPENAI = "sk-proj-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z" * 4
OPENAI_LEGACY = "sk-" + "A1b2C3d4E5f6G7h8I9j0" + "T3BlbkFJ" + "K1l2M3n4O5p6Q7r8S9t0"
ANTHROPIC = "sk-ant-api03-" + "x" * 93 + "AA"
GCP_API_KEY = "AIza" + "SyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q"
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    + "\n".join(["MIIEowIBAAKCAQEA7bq8" + "x" * 44] * 6)
    + "\n-----END RSA PRIVATE KEY-----"
)
SERVICE_ACCOUNT = (
    '{"type": "service_account", "private_key_id": "'
    + "0123456789abcdef0123456789abcdef01234567"
    + '", "private_key": "-----BEGIN PRIVATE KEY-----\\n'
    + "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC" * 4
    + '\\n-----END PRIVATE KEY-----\\n"}'
)
VISA = "4111 1111 1111 1111"
IBAN = "DE89 3704 0044 0532 0130 00"


def rule(kind: str, action: str = "redact", stage: str = "output", pattern: str = "", name: str = "") -> GuardrailRule:
    index = guardrail_index([GuardrailRow(1, name or kind, kind, pattern, action, stage)], [(1, 1)], [])
    found = index.for_caller(1, 1)
    scanner = found.input if stage == "input" else found.output
    return scanner.rules[0]


def scrubbed(text: str, *rules: GuardrailRule) -> str:
    scanner = Scanner(rules)
    return redacted(text, scanner.find(text))


SECRETS = rule("secrets")
PII = rule("pii")


@pytest.mark.parametrize(
    ("secret", "label"),
    [
        (AWS_KEY, "AWS_ACCESS_KEY"),
        (GITHUB, "GITHUB_TOKEN"),
        (GITHUB_PAT, "GITHUB_TOKEN"),
        (SLACK, "SLACK_TOKEN"),
        ("https://hooks.slack.com/services/T00000000/B00000000/" + "X" * 24, "SLACK_WEBHOOK"),
        (STRIPE, "STRIPE_KEY"),
        (OPENAI, "OPENAI_KEY"),
        (OPENAI_LEGACY, "OPENAI_KEY"),
        (ANTHROPIC, "ANTHROPIC_KEY"),
        (GCP_API_KEY, "GCP_API_KEY"),
        (PEM, "PRIVATE_KEY"),
    ],
)
def test_each_kind_of_secret_becomes_a_typed_placeholder(secret: str, label: str) -> None:
    assert scrubbed(f"use {secret} here", SECRETS) == f"use [REDACTED:{label}] here"


def test_an_aws_secret_key_is_found_by_the_name_before_it_and_only_the_key_is_replaced() -> None:
    text = f"aws_secret_access_key = {AWS_SECRET}\nAWS_SECRET_ACCESS_KEY: '{AWS_SECRET}'"
    assert scrubbed(text, SECRETS) == (
        "aws_secret_access_key = [REDACTED:AWS_SECRET_KEY]\nAWS_SECRET_ACCESS_KEY: '[REDACTED:AWS_SECRET_KEY]'"
    )
    assert scrubbed(f"just forty characters: {AWS_SECRET}", SECRETS).endswith(AWS_SECRET)


def test_a_gcp_service_account_key_file_loses_its_key_id_and_private_key() -> None:
    out = scrubbed(SERVICE_ACCOUNT, SECRETS)
    assert "0123456789abcdef" not in out and "MIIEvQ" not in out
    assert '"private_key_id": "[REDACTED:GCP_SERVICE_ACCOUNT_KEY]"' in out and "[REDACTED:PRIVATE_KEY]" in out


def test_words_that_look_like_key_prefixes_are_left_alone() -> None:
    text = "task-runner sk-short xAKIAIOSFODNN7EXAMPLE ghp_tooshort a certificate: -----BEGIN CERTIFICATE-----"
    assert scrubbed(text, SECRETS) == text


def test_a_private_key_cut_off_before_its_end_line_is_still_redacted() -> None:
    text = "here: -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nMIIEvQIBAD"
    assert scrubbed(text, SECRETS) == "here: [REDACTED:PRIVATE_KEY]"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail bob.smith+tag@mail.example.co.uk today", "mail [REDACTED:EMAIL] today"),
        ("call +44 20 7946 0958 or (555) 123-4567", "call [REDACTED:PHONE] or [REDACTED:PHONE]"),
        ("or 555-123-4567.", "or [REDACTED:PHONE]."),
        (f"card {VISA} and 5555555555554444", "card [REDACTED:CARD] and [REDACTED:CARD]"),
        (f"pay to {IBAN} or GB82WEST12345698765432 ok", "pay to [REDACTED:IBAN] or [REDACTED:IBAN] ok"),
        ("ssn 123-45-6789, nino AB 12 34 56 C", "ssn [REDACTED:US_SSN], nino [REDACTED:UK_NINO]"),
    ],
)
def test_personal_data_becomes_typed_placeholders(text: str, expected: str) -> None:
    assert scrubbed(text, PII) == expected


def test_a_random_sixteen_digit_number_that_fails_the_luhn_check_is_not_redacted() -> None:
    assert not luhn_valid("4111111111111112")
    for text in ("order 4111 1111 1111 1112 shipped", "id 1234567812345678", "ref 4111-1111-1111-1113"):
        assert scrubbed(text, PII) == text


def test_an_iban_with_a_wrong_check_digit_is_not_redacted() -> None:
    assert iban_valid("DE89370400440532013000") and not iban_valid("DE88370400440532013000")
    assert scrubbed("to DE88 3704 0044 0532 0130 00 please", PII) == "to DE88 3704 0044 0532 0130 00 please"


def test_an_iban_followed_by_a_capitalised_word_is_still_found() -> None:
    assert scrubbed("GB82WEST12345698765432 THEN", PII) == "[REDACTED:IBAN] THEN"


def test_numbers_that_are_not_personal_data_are_left_alone() -> None:
    text = "In 2024 we sold 1500 units at 19.99 each; version 1.2.3; 000-12-3456 is no SSN; 12-34"
    assert scrubbed(text, PII) == text


def test_a_regex_guardrail_names_its_placeholder_after_itself() -> None:
    employee = rule("regex", pattern=r"EMP-\d{6}", name="employee-ids")
    assert scrubbed("EMP-123456 and EMP-12", employee) == "[REDACTED:EMPLOYEE_IDS] and EMP-12"


@pytest.mark.parametrize(
    ("pattern", "error"),
    [
        ("(unclosed", "invalid regular expression"),
        ("a*", "matches the empty text"),
        ("", "needs a pattern"),
        ("x" * 1001, "longer than"),
    ],
)
def test_a_bad_pattern_is_refused_with_a_reason(pattern: str, error: str) -> None:
    assert error in (pattern_error(pattern) or "")
    with pytest.raises(ValueError, match=error):
        regex_detector("bad", pattern)


def test_a_stored_bad_pattern_is_left_out_of_the_index_not_an_outage() -> None:
    index = guardrail_index(
        [GuardrailRow(1, "bad", "regex", "(", "block", "input"), GuardrailRow(2, "ok", "pii", "", "flag", "input")],
        [(1, 7), (2, 7)],
        [],
    )
    found = index.for_caller(7, 99)
    assert [r.name for r in found.input.rules] == ["ok"] and found.output is None


def test_the_index_merges_the_tenants_and_the_keys_guardrails_and_nobody_elses() -> None:
    rows = [GuardrailRow(i, f"g{i}", "pii", "", "flag", "input") for i in (1, 2, 3)]
    index = guardrail_index(rows, [(1, 10), (2, 10)], [(2, 100), (3, 101)])
    assert [r.name for r in index.for_caller(10, 100).input.rules] == ["g1", "g2"]
    assert [r.name for r in index.for_caller(10, 101).input.rules] == ["g1", "g2", "g3"]
    assert [r.name for r in index.for_caller(11, 101).input.rules] == ["g3"]
    assert index.for_caller(11, 102) is None


def test_a_block_wins_over_a_redaction_of_the_same_text() -> None:
    block = rule("secrets", action="block")
    scanner = Scanner([PII, block])
    hits = scanner.find(f"me@example.com {AWS_KEY}")
    assert {h.rule.action for h in hits} == {"redact", "block"}


class _Result:
    def __init__(self, entity_type: str, start: int, end: int, score: float) -> None:
        self.entity_type, self.start, self.end, self.score = entity_type, start, end, score


def test_presidio_findings_are_added_when_it_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    class AnalyzerEngine:
        def analyze(self, *, text: str, entities: list[str], language: str) -> list[_Result]:
            start = text.find("Ada Lovelace")
            return [_Result("PERSON", start, start + 12, 0.85), _Result("PERSON", 0, 2, 0.2)] if start >= 0 else []

    monkeypatch.setitem(sys.modules, "presidio_analyzer", types.SimpleNamespace(AnalyzerEngine=AnalyzerEngine))
    analyzer = presidio_analyzer()
    assert analyzer is not None
    detector = PiiDetector(analyzer)
    found = detector.find("Ask Ada Lovelace at ada@example.com")
    assert sorted(f.label for f in found) == ["EMAIL", "PERSON"]


def test_without_presidio_the_built_in_patterns_alone_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "presidio_analyzer", None)  # an import of it fails
    assert presidio_analyzer() is None


# --- streams -------------------------------------------------------------------------

EVERYTHING = [SECRETS, PII, rule("regex", pattern=r"EMP-\d{6}", name="emp")]
STREAM_TEXT = (
    "Write to alice.smith@example.com or call +44 20 7946 0958. Key AKIAIOSFODNN7EXAMPLE, card 4111 1111 1111 1111, "
    f"iban {IBAN}, id EMP-123456, {OPENAI_LEGACY} and {GITHUB}. Bye"
)


def streamed(pieces: list[str], rules: list[GuardrailRule]) -> tuple[str, list[str]]:
    held = HeldText(Scanner(rules), lambda hits: None)
    sent = [held.feed(piece) for piece in pieces]
    return "".join(sent) + held.flush(), sent


def test_text_split_in_two_at_every_offset_is_redacted_as_the_whole_text_is() -> None:
    whole = scrubbed(STREAM_TEXT, *EVERYTHING)
    assert "alice" not in whole and "AKIA" not in whole and "EMP-1" not in whole
    for cut in range(len(STREAM_TEXT) + 1):
        out, _ = streamed([STREAM_TEXT[:cut], STREAM_TEXT[cut:]], EVERYTHING)
        assert out == whole, cut


def test_text_streamed_one_character_at_a_time_is_redacted_as_the_whole_text_is() -> None:
    out, sent = streamed(list(STREAM_TEXT), EVERYTHING)
    assert out == scrubbed(STREAM_TEXT, *EVERYTHING)
    assert not any("alice" in piece or "AKIA" in piece for piece in sent)


def test_a_private_key_streamed_line_by_line_never_shows_a_line() -> None:
    text = f"Here it is:\n{PEM}\nDone."
    pieces = text.split("\n")
    out, sent = streamed([p + "\n" for p in pieces[:-1]] + [pieces[-1]], [SECRETS])
    assert out == "Here it is:\n[REDACTED:PRIVATE_KEY]\nDone."
    assert not any("MIIE" in piece for piece in sent)


def test_text_that_cannot_start_a_match_is_released_at_once() -> None:
    held = HeldText(Scanner(EVERYTHING), lambda hits: None)
    assert held.feed("Hello there, ") == "Hello there, "
    # a word may still become an e-mail's local part: only it waits
    assert held.feed("contact bob") == "contact "
    assert held.feed("@example.com, thanks") == "[REDACTED:EMAIL], "
    assert held.flush() == "thanks"


def test_a_certificate_block_is_not_held_once_its_header_shows_it_is_no_private_key() -> None:
    held = HeldText(Scanner([SECRETS]), lambda hits: None)
    assert held.feed("-----BEGIN CERTIFICATE-----\nMIIB") == "-----BEGIN CERTIFICATE-----\nMIIB"


def test_a_stream_block_raises_before_the_match_is_sent() -> None:
    block = rule("secrets", action="block")

    def settle(hits: Any) -> None:
        if any(h.rule.action == "block" for h in hits):
            raise GuardrailBlockedError(block)

    held = HeldText(Scanner([block]), settle)
    assert held.feed("the key is AKIAIOSF") == "the key is "
    with pytest.raises(GuardrailBlockedError):
        held.feed("ODNN7EXAMPLE and more")


def chat_chunk(content: str | None = None, finish: str | None = None) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def sse(event: dict[str, Any], named: bool = False) -> bytes:
    head = b"event: " + event["type"].encode() + b"\n" if named else b""
    return head + b"data: " + orjson.dumps(event) + b"\n\n"


def client_text(dialect: Dialect, events: list[dict[str, Any]]) -> str:
    texts = []
    for event in events:
        if dialect is Dialect.CHAT:
            texts += [c["delta"].get("content") or "" for c in event.get("choices", [])]
        elif dialect is Dialect.MESSAGES and event.get("type") == "content_block_delta":
            texts.append(event["delta"]["text"])
        elif dialect is Dialect.RESPONSES and event.get("type") == "response.output_text.delta":
            texts.append(event["delta"])
        elif dialect is Dialect.COMPLETIONS:
            texts += [c.get("text", "") for c in event.get("choices", [])]
        elif dialect is Dialect.OLLAMA_CHAT:
            texts.append(event["message"]["content"])
    return "".join(texts)


def stream_of(dialect: Dialect, pieces: list[str]) -> Iterator[dict[str, Any]]:
    """A stream of `dialect` whose text arrives in `pieces`."""
    match dialect:
        case Dialect.CHAT:
            yield chat_chunk("")
            yield from (chat_chunk(p) for p in pieces)
            yield chat_chunk(finish="stop")
        case Dialect.COMPLETIONS:
            yield from ({"choices": [{"index": 0, "text": p, "finish_reason": None}]} for p in pieces)
            yield {"choices": [{"index": 0, "text": "", "finish_reason": "stop"}]}
        case Dialect.MESSAGES:
            yield {"type": "message_start", "message": {"id": "m"}}
            yield {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
            for p in pieces:
                yield {"type": "ping"}
                yield {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}
            yield {"type": "content_block_stop", "index": 0}
            yield {"type": "message_stop"}
        case Dialect.RESPONSES:
            at = {"item_id": "msg", "output_index": 0, "content_index": 0}
            yield from ({"type": "response.output_text.delta", **at, "delta": p} for p in pieces)
            whole = "".join(pieces)
            yield {"type": "response.output_text.done", **at, "text": whole}
            message = {"type": "message", "content": [{"type": "output_text", "text": whole}]}
            yield {"type": "response.completed", "response": {"output": [message]}}
        case Dialect.OLLAMA_CHAT:
            yield from ({"message": {"role": "assistant", "content": p}, "done": False} for p in pieces)
            yield {"message": {"role": "assistant", "content": ""}, "done": True}


@pytest.mark.parametrize(
    "dialect", [Dialect.CHAT, Dialect.COMPLETIONS, Dialect.MESSAGES, Dialect.RESPONSES, Dialect.OLLAMA_CHAT]
)
def test_each_apis_stream_is_redacted_with_the_secret_split_at_every_offset(dialect: Dialect) -> None:
    text = f"Mail alice@example.com the key {AWS_KEY}"
    expected = "Mail [REDACTED:EMAIL] the key [REDACTED:AWS_ACCESS_KEY]"
    for cut in range(len(text) + 1):
        guard = StreamGuard(dialect, Scanner([SECRETS, PII]), lambda hits: None)
        out = guard.feed_all(list(stream_of(dialect, [text[:cut], text[cut:]]))) + guard.close()
        assert client_text(dialect, out) == expected, cut
        dumped = orjson.dumps(out)
        assert b"alice" not in dumped and b"AKIA" not in dumped, cut


def test_the_responses_apis_whole_texts_at_the_end_are_redacted_too() -> None:
    guard = StreamGuard(Dialect.RESPONSES, Scanner([PII]), lambda hits: None)
    out = guard.feed_all(list(stream_of(Dialect.RESPONSES, ["to bob@exa", "mple.com"])))
    assert out[-2]["text"] == "to [REDACTED:EMAIL]"
    assert out[-1]["response"]["output"][0]["content"][0]["text"] == "to [REDACTED:EMAIL]"


def test_sse_bytes_keep_their_bytes_when_nothing_is_redacted() -> None:
    guard = StreamGuard(Dialect.CHAT, Scanner([SECRETS]), lambda hits: None)
    usage = b'data: {"choices":[],"usage":{"prompt_tokens":1}}\n\n'
    events = [sse(chat_chunk("Hello ")), b": keep-alive\n\n", usage, b"data: [DONE]\n\n"]
    assert guard.raw(events) == events


def test_sse_bytes_of_named_events_are_rewritten_with_their_names() -> None:
    guard = StreamGuard(Dialect.MESSAGES, Scanner([SECRETS]), lambda hits: None)
    delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": f"k {AWS_KEY} ok"}}
    [out] = guard.raw([sse(delta, named=True)])
    assert out.startswith(b"event: content_block_delta\ndata: ") and b"[REDACTED:AWS_ACCESS_KEY] ok" in out
