"""Opt-in request tracing: sampled requests' bodies, redacted, in day files or rows."""

import datetime as dt
import io
import time
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from accounts.snapshots import trace_sample_rate
from billing.meter import meter
from conftest import IssuedKey
from gateway import lifecycle
from gateway.kernel.context import TenantContext, Usage, UsageEvent
from proxy import pipeline as pipeline_module
from proxy import tracing
from proxy.tests.asgi import asgi_call
from proxy.tests.live import LiveGateway
from proxy.tracing import TraceCapture, scrub, trace_files_prune, trace_record
from proxy.upstream import upstream_sessions_close

SECRET = "sk-secretvalue123456"
CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": f"my key is {SECRET}, keep it"}]}
REDACTED_CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "my key is [redacted], keep it"}]}
CTX = TenantContext(
    tenant_id=7, tenant_slug="acme", tenant_active=True, key_id=9, key_prefix="sk-gw-AbCd", trace_sample_rate=1.0
)


def usage_event(request_id: str, *, stream: bool = False, status: int = 200) -> UsageEvent:
    return UsageEvent(
        request_id=request_id,
        created_at=dt.datetime.now(dt.UTC),
        tenant_id=7,
        key_id=9,
        endpoint="chat.completions",
        public_model="gpt-test",
        upstream_model="gpt-up",
        provider="fake",
        status_code=status,
        usage=Usage(),
        cost_nanos=0,
        latency_ms=1,
        stream=stream,
    )


@pytest.fixture
def submitted(monkeypatch: Any) -> list[TraceCapture]:
    """Captures handed to the writer, kept here instead of written."""
    captures: list[TraceCapture] = []
    monkeypatch.setattr(tracing.trace_writer, "submit", captures.append)
    return captures


# --- pure -------------------------------------------------------------------------------
def test_scrub_replaces_key_like_strings_and_hides_secret_named_fields() -> None:
    body = {"messages": [{"content": f"use {SECRET} and sk-ant-api03-{'x' * 30}"}], "api_key": "hunter2", "n": 2}
    assert scrub(body) == {
        "messages": [{"content": "use [redacted] and sk-[redacted]"}],
        "api_key": "[redacted]",
        "n": 2,
    }


def test_a_keys_own_rate_wins_over_its_tenants_even_when_it_is_zero() -> None:
    assert trace_sample_rate(None, Decimal("0.25")) == 0.25
    assert trace_sample_rate(Decimal(0), Decimal(1)) == 0.0
    assert trace_sample_rate(Decimal("0.5"), Decimal(0)) == 0.5
    assert trace_sample_rate(None, None) == 0.0


def test_a_json_trace_record_has_the_redacted_request_and_the_answer(submitted: list[TraceCapture]) -> None:
    capture = TraceCapture(CTX, "req_1", "chat.completions", CHAT)
    capture.attempt_finished(usage_event("req_1~1", status=503))  # retried
    capture.attempt_finished(usage_event("req_1"), b'{"answer": "ok", "token": "t"}')
    assert submitted == [capture]
    record = trace_record(capture)
    assert record["request"] == REDACTED_CHAT
    assert record["response"] == {"answer": "ok", "token": "[redacted]"}
    assert record["attempts"] == [{"request_id": "req_1~1", "provider": "fake", "status": 503, "error_code": ""}]
    assert (record["request_id"], record["tenant"], record["key_prefix"], record["status"], record["truncated"]) == (
        "req_1",
        "acme",
        "sk-gw-AbCd",
        200,
        False,
    )


def test_stream_events_past_the_cap_are_left_out_and_the_trace_says_so(
    submitted: list[TraceCapture], settings: Any
) -> None:
    settings.TRACE_MAX_BODY_BYTES = 25
    capture = TraceCapture(CTX, "req_2", "chat.completions", {"model": "m"})
    capture.add_events([b"data: one-event\n\n", b"data: two-events\n\n"])
    capture.add_events([b"data: three\n\n"])
    capture.attempt_finished(usage_event("req_2", stream=True))
    record = trace_record(capture)
    assert (record["response"], record["truncated"]) == (["data: one-event\n\n"], True)


def test_a_request_body_past_the_cap_is_kept_as_cut_text(submitted: list[TraceCapture], settings: Any) -> None:
    settings.TRACE_MAX_BODY_BYTES = 20
    capture = TraceCapture(CTX, "req_3", "chat.completions", {"model": "gpt-test", "messages": []})
    capture.attempt_finished(usage_event("req_3"), b"{}")
    record = trace_record(capture)
    assert (record["request"], record["response"], record["truncated"]) == ('{"model":"gpt-test",', {}, True)


def test_day_files_older_than_the_retention_are_deleted(tmp_path: Path) -> None:
    today = dt.date(2025, 3, 10)
    for day in ("2025-03-02", "2025-03-03", "2025-03-10"):
        (tmp_path / f"traces-{day}.jsonl").write_text("{}\n")
    (tmp_path / "notes.txt").write_text("not ours")
    assert trace_files_prune(7, tmp_path, today=today) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "notes.txt",
        "traces-2025-03-03.jsonl",
        "traces-2025-03-10.jsonl",
    ]


@pytest.mark.django_db
def test_the_db_sink_stores_rows_and_retention_deletes_old_ones(submitted: list[TraceCapture]) -> None:
    from accounts.models import RequestTrace
    from accounts.traces import request_traces_prune, request_traces_store

    capture = TraceCapture(CTX, "req_4", "chat.completions", CHAT)
    capture.attempt_finished(usage_event("req_4"), b'{"ok": true}')
    old = trace_record(capture)
    old.update(request_id="req_old", started_at=(dt.datetime.now(dt.UTC) - dt.timedelta(days=8)).isoformat())
    assert request_traces_store([trace_record(capture), old]) == 2
    row = RequestTrace.objects.get(request_id="req_4")
    assert (row.request, row.response, row.key_prefix, row.status) == (REDACTED_CHAT, {"ok": True}, "sk-gw-AbCd", 200)
    assert request_traces_prune(7) == 1
    assert list(RequestTrace.objects.values_list("request_id", flat=True)) == ["req_4"]


@pytest.mark.django_db
def test_the_db_sink_keeps_an_augmentors_steps_and_a_plain_request_has_none(submitted: list[TraceCapture]) -> None:
    from accounts.traces import request_trace_find, request_traces_store

    steps: list[dict[str, Any]] = [
        {"step": "designator", "decision": "scrape", "query": "", "urls": ["https://example.org/a"]},
        {"step": "scrape", "url": "https://example.org/a", "final_url": "https://example.org/a", "chars": 9},
        {"step": "context", "added": 40, "truncated": False, "text": f"Page https://example.org/a:\nkey {SECRET}"},
    ]
    augmented = TraceCapture(CTX, "req_aug", "chat.completions", CHAT)
    augmented.augmentation = steps
    augmented.attempt_finished(usage_event("req_aug"), b'{"ok": true}')
    plain = TraceCapture(CTX, "req_plain", "chat.completions", CHAT)
    plain.attempt_finished(usage_event("req_plain"), b'{"ok": true}')

    assert request_traces_store([trace_record(augmented), trace_record(plain)]) == 2

    found = request_trace_find("req_aug")
    assert found is not None
    assert [step["step"] for step in found["augmentation"]] == ["designator", "scrape", "context"]
    assert found["augmentation"][2]["text"] == "Page https://example.org/a:\nkey [redacted]"  # scrubbed as the bodies
    assert (request_trace_find("req_plain") or {})["augmentation"] == []


# --- the request path, in process -----------------------------------------------------------
@pytest.fixture
async def app(gateway_config: None, monkeypatch: Any) -> AsyncIterator[Any]:
    from gateway.asgi import application

    monkeypatch.setattr(lifecycle, "GATEWAY_BACKGROUND", False)
    yield application
    meter.take(meter.pending)
    await upstream_sessions_close()


async def test_tracing_off_never_creates_a_capture(
    app: Any, key: IssuedKey, django_db_blocker: Any, monkeypatch: Any
) -> None:
    def refuse(*args: Any) -> None:
        raise AssertionError("trace_start called for an untraced key")

    monkeypatch.setattr(pipeline_module, "trace_start", refuse)
    monkeypatch.setattr(tracing.TraceCapture, "__init__", refuse)
    with django_db_blocker.unblock():
        for stream in (False, True):
            response = await asgi_call(
                app, "POST", "/v1/chat/completions", headers=key.headers, body=orjson.dumps({**CHAT, "stream": stream})
            )
            assert response.status == 200, response.body


@pytest.fixture
def traced_key(issue_key: Callable[..., IssuedKey]) -> IssuedKey:
    return issue_key(trace_sample_rate=Decimal(1))


async def test_a_translated_stream_is_captured_as_the_events_the_client_got(
    app: Any, traced_key: IssuedKey, django_db_blocker: Any, submitted: list[TraceCapture]
) -> None:
    key = traced_key
    with django_db_blocker.unblock():
        response = await asgi_call(
            app,
            "POST",
            "/v1/chat/completions",
            headers=key.headers,
            body=orjson.dumps({**CHAT, "model": "claude-test", "stream": True}),
        )
    assert response.status == 200, response.body
    [capture] = submitted
    record = trace_record(capture)
    assert record["request_id"] == response.headers["x-request-id"]
    assert "".join(record["response"]) == response.body.decode()
    assert record["response"][-1] == "data: [DONE]\n\n"
    assert (record["provider"], record["stream"], record["request"]) == (
        "fake-anthropic",
        True,
        {**REDACTED_CHAT, "model": "claude-test", "stream": True},
    )


# --- the live gateway, file sink ------------------------------------------------------------------
@pytest.fixture(scope="module")
def traced_gateway(gateway_config: None, tmp_path_factory: Any) -> Iterator[tuple[LiveGateway, Path]]:
    folder = tmp_path_factory.mktemp("traces")
    gateway = LiveGateway(env={"TRACE_DIR": str(folder), "TRACE_SINK": "file"}).start()
    yield gateway, folder
    gateway.terminate()


def traces_in(folder: Path, request_id: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The trace lines of `request_id` once the writer has written one."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [
            orjson.loads(line) for path in folder.glob("traces-*.jsonl") for line in path.read_bytes().splitlines()
        ]
        found = [line for line in lines if line["request_id"] == request_id]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_a_traced_key_gets_one_line_per_request_with_the_bodies_and_no_secrets(
    traced_gateway: tuple[LiveGateway, Path], issue_key: Callable[..., IssuedKey]
) -> None:
    gateway, folder = traced_gateway
    key = issue_key(trace_sample_rate=Decimal(1))
    answer = httpx.post(f"{gateway.url}/v1/chat/completions", headers=key.headers, json=CHAT, timeout=10)
    assert answer.status_code == 200, answer.text
    streamed = httpx.post(
        f"{gateway.url}/v1/chat/completions", headers=key.headers, json={**CHAT, "stream": True}, timeout=10
    )
    assert streamed.status_code == 200, streamed.text
    [json_trace] = traces_in(folder, answer.headers["x-request-id"])
    [stream_trace] = traces_in(folder, streamed.headers["x-request-id"])
    assert json_trace["request"] == REDACTED_CHAT
    assert json_trace["response"] == answer.json()
    assert (
        json_trace["key_id"],
        json_trace["tenant_id"],
        json_trace["model"],
        json_trace["endpoint"],
        json_trace["status"],
        json_trace["stream"],
    ) == (key.key_id, key.tenant_id, "gpt-test", "chat.completions", 200, False)
    assert stream_trace["request"] == {**REDACTED_CHAT, "stream": True}
    assert "".join(stream_trace["response"]) == streamed.text
    assert len(stream_trace["response"]) > 2 and stream_trace["response"][-1] == "data: [DONE]\n\n"
    files = b"".join(path.read_bytes() for path in folder.glob("traces-*.jsonl"))
    assert SECRET.encode() not in files
    assert key.plaintext.encode() not in files


def test_a_key_with_rate_zero_leaves_no_trace(
    traced_gateway: tuple[LiveGateway, Path], issue_key: Callable[..., IssuedKey]
) -> None:
    gateway, folder = traced_gateway
    untraced, traced = issue_key(), issue_key(trace_sample_rate=Decimal(1))
    skipped = httpx.post(f"{gateway.url}/v1/chat/completions", headers=untraced.headers, json=CHAT, timeout=10)
    marker = httpx.post(f"{gateway.url}/v1/chat/completions", headers=traced.headers, json=CHAT, timeout=10)
    assert (skipped.status_code, marker.status_code) == (200, 200)
    assert len(traces_in(folder, marker.headers["x-request-id"])) == 1  # the writer got this far
    assert traces_in(folder, skipped.headers["x-request-id"], timeout=0) == []


@pytest.mark.django_db
def test_key_create_sets_the_trace_rate() -> None:
    from django.core.management import call_command

    from accounts.models import ApiKey
    from accounts.services import tenant_create

    tenant_create(slug="traced")
    call_command("key_create", "traced", "--trace-rate", "0.5", stdout=io.StringIO(), stderr=io.StringIO())
    assert ApiKey.objects.get(tenant__slug="traced").trace_sample_rate == Decimal("0.5")
