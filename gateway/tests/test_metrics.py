"""/metrics: what the usage meter's events, refusals and the request path's timings become."""

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from billing.meter import meter
from gateway import metrics as gateway_metrics
from gateway.kernel.context import Usage, UsageEvent
from gateway.metrics import OTHER, GatewayMetrics, LabelCap

BASE_DIR = Path(__file__).resolve().parents[2]


def usage_event(**fields: Any) -> UsageEvent:
    values: dict[str, Any] = {
        "request_id": "req_1",
        "created_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        "tenant_id": 7,
        "key_id": 70,
        "endpoint": "chat.completions",
        "public_model": "gpt-test",
        "upstream_model": "gpt-up",
        "provider": "fake",
        "status_code": 200,
        "usage": Usage(input_tokens=100, cached_input_tokens=20, output_tokens=30),
        "cost_nanos": 1_500_000,
        "latency_ms": 1200,
        "stream": True,
        "ttft_ms": 300,
    }
    values.update(fields)
    return UsageEvent(**values)


def samples(text: bytes | str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """{sorted labels: value} of every sample called `name` in an exposition."""
    if isinstance(text, bytes):
        text = text.decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


@pytest.fixture
def fresh() -> GatewayMetrics:
    return GatewayMetrics(CollectorRegistry(), max_models=3, max_tenants=2)


def test_a_usage_event_counts_one_request_by_model_tenant_status_class_and_endpoint(fresh: GatewayMetrics) -> None:
    fresh.record_usage_event(usage_event())
    fresh.record_usage_event(usage_event(status_code=502, error_code="upstream_unreachable"))
    assert samples(fresh.exposition(), "gateway_requests_total") == {
        (("endpoint", "chat.completions"), ("model", "gpt-test"), ("status_class", "2xx"), ("tenant", "7")): 1.0,
        (("endpoint", "chat.completions"), ("model", "gpt-test"), ("status_class", "5xx"), ("tenant", "7")): 1.0,
    }
    assert samples(fresh.exposition(), "gateway_upstream_errors_total") == {
        (("code", "upstream_unreachable"), ("model", "gpt-test")): 1.0
    }


def test_tokens_are_counted_per_bucket_and_cost_in_dollars(fresh: GatewayMetrics) -> None:
    fresh.record_usage_event(usage_event())
    text = fresh.exposition()
    assert samples(text, "gateway_tokens_total") == {
        (("bucket", "input"), ("model", "gpt-test"), ("tenant", "7")): 100.0,
        (("bucket", "cached_input"), ("model", "gpt-test"), ("tenant", "7")): 20.0,
        (("bucket", "output"), ("model", "gpt-test"), ("tenant", "7")): 30.0,
    }
    assert samples(text, "gateway_cost_usd_total") == {(("model", "gpt-test"), ("tenant", "7")): 0.0015}


def test_latency_and_time_to_first_token_are_histograms_in_seconds(fresh: GatewayMetrics) -> None:
    fresh.record_usage_event(usage_event())
    fresh.record_usage_event(usage_event(latency_ms=40, ttft_ms=None, stream=False))
    text = fresh.exposition()
    assert samples(text, "gateway_request_duration_seconds_count") == {(("model", "gpt-test"),): 2.0}
    assert samples(text, "gateway_request_duration_seconds_sum") == {(("model", "gpt-test"),): 1.24}
    assert samples(text, "gateway_request_duration_seconds_bucket")[(("le", "0.05"), ("model", "gpt-test"))] == 1.0
    assert samples(text, "gateway_time_to_first_token_seconds_count") == {(("model", "gpt-test"),): 1.0}
    assert samples(text, "gateway_time_to_first_token_seconds_sum") == {(("model", "gpt-test"),): 0.3}


def test_cache_lookups_are_counted_by_result(fresh: GatewayMetrics) -> None:
    for status in ("hit", "hit", "miss", "bypass", ""):
        fresh.record_usage_event(usage_event(cache_status=status, cache_hit=status == "hit"))
    assert samples(fresh.exposition(), "gateway_cache_lookups_total") == {
        (("result", "hit"),): 2.0,
        (("result", "miss"),): 1.0,
        (("result", "bypass"),): 1.0,
    }


def test_models_and_tenants_beyond_the_caps_are_counted_as_other(fresh: GatewayMetrics) -> None:
    for n in range(5):
        fresh.record_usage_event(usage_event(public_model=f"m{n}", tenant_id=n, usage=Usage()))
    requests = samples(fresh.exposition(), "gateway_requests_total")
    assert {(dict(k)["model"], dict(k)["tenant"]): v for k, v in requests.items()} == {
        ("m0", "0"): 1.0,
        ("m1", "1"): 1.0,
        ("m2", OTHER): 1.0,
        (OTHER, OTHER): 2.0,
    }


def test_a_label_cap_keeps_the_first_values_and_folds_the_rest() -> None:
    cap = LabelCap(2)
    assert [cap(v) for v in ("a", "b", "c", "a", "d", "b")] == ["a", "b", OTHER, "a", OTHER, "b"]


def test_a_breaker_reports_one_state_at_a_time(fresh: GatewayMetrics) -> None:
    fresh.set_breaker_state("openai-east", "open")
    fresh.set_breaker_state("openai-east", "half_open")
    assert samples(fresh.exposition(), "gateway_breaker_state") == {
        (("deployment", "openai-east"), ("state", "closed")): 0.0,
        (("deployment", "openai-east"), ("state", "half_open")): 1.0,
        (("deployment", "openai-east"), ("state", "open")): 0.0,
    }


def test_overhead_and_upstream_time_are_histograms() -> None:
    before = samples(gateway_metrics.metrics.exposition(), "gateway_overhead_seconds_count").get((), 0.0)
    gateway_metrics.observe_overhead(0.002)
    gateway_metrics.observe_upstream(0.5)
    text = gateway_metrics.metrics.exposition()
    assert samples(text, "gateway_overhead_seconds_count")[()] == before + 1
    assert samples(text, "gateway_upstream_seconds_bucket")[(("le", "0.5"),)] >= 1.0


def test_the_meter_queue_depth_is_read_at_scrape_time(fresh: GatewayMetrics, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(type(meter), "pending", property(lambda self: 42))
    monkeypatch.setattr(type(meter), "inflight", property(lambda self: 3))
    text = fresh.exposition()
    assert samples(text, "gateway_usage_queue_depth") == {(): 42.0}
    assert samples(text, "gateway_requests_in_flight") == {(): 3.0}


def test_the_listener_is_registered_with_the_usage_meter() -> None:
    assert gateway_metrics.record_usage_event in meter._listeners


@pytest.mark.django_db
def test_metrics_are_served_and_count_refusals_and_events(client: Any, settings: Any) -> None:
    settings.METRICS_TOKEN = ""
    labels = (("endpoint", "chat.completions"), ("model", "scrape-model"), ("status_class", "2xx"), ("tenant", "7"))
    refused = (("code", "invalid_api_key"),)
    before = client.get("/metrics").content
    gateway_metrics.record_usage_event(usage_event(public_model="scrape-model"))
    assert client.get("/v1/models", HTTP_AUTHORIZATION="Bearer sk-gw-nosuchkey").status_code == 401
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert (
        samples(response.content, "gateway_requests_total")[labels]
        == samples(before, "gateway_requests_total").get(labels, 0) + 1
    )
    assert (
        samples(response.content, "gateway_refusals_total")[refused]
        == samples(before, "gateway_refusals_total").get(refused, 0) + 1
    )


def test_with_a_metrics_token_the_endpoint_needs_it(client: Any, settings: Any) -> None:
    settings.METRICS_TOKEN = "scrape-secret-123"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret-123").status_code == 200


_RECORD_ONE_EVENT = """
import django, sys
django.setup()
sys.path.insert(0, {tests!r})
from test_metrics import usage_event
from gateway.metrics import metrics
metrics.record_usage_event(usage_event(public_model="mp-model"))
sys.stdout.write(metrics.exposition().decode())
"""


def test_in_multiprocess_mode_each_process_answers_for_all(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "gateway.settings"}
    script = _RECORD_ONE_EVENT.format(tests=str(Path(__file__).parent))
    outputs = [
        subprocess.run(
            [sys.executable, "-c", script],
            env=env,
            cwd=BASE_DIR,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        for _ in range(2)
    ]
    labels = (("endpoint", "chat.completions"), ("model", "mp-model"), ("status_class", "2xx"), ("tenant", "7"))
    assert [samples(text, "gateway_requests_total")[labels] for text in outputs] == [1.0, 2.0]
