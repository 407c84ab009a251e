"""Prometheus metrics at /metrics, fed by the usage meter.

Every `UsageEvent` the meter receives passes through `record_usage_event`
(registered with `meter.listen`): requests, tokens, cost, latency, time to
first token, cache results and upstream errors. Refusals that never reach an
upstream are counted by code from the /v1 exception handlers
(`count_refusal`); guardrail verdicts by kind, action and stage come from
proxy.guardrails (`verdict_listeners`). The request path reports its own overhead and upstream
time (`observe_overhead`, `observe_upstream`); circuit breakers report their
state (`set_breaker_state`).

Label values are capped per label (METRICS_MAX_MODELS, METRICS_MAX_TENANTS,
and fixed caps below): the first N distinct values keep their names, later
ones are counted under "other", so a client inventing model names cannot
grow the series without bound.

With several server processes, set PROMETHEUS_MULTIPROC_DIR (an empty
directory, shared by the processes, wiped at start): prometheus_client then
keeps values in files there and any process answers /metrics for all.
Cost is a float counter of USD: fine for graphs; the ledger holds the money.
"""

import hmac
import os
import threading

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from billing.meter import meter
from gateway.kernel.context import UsageEvent
from proxy.breaker import state_listeners
from proxy.guardrails.run import verdict_listeners
from proxy.realtime import session_listeners, sessions_open

OTHER = "other"
# The classic text format: every Prometheus version (and other scrapers) reads it;
# the names here are all legacy-valid, so nothing is lost against version 1.0.0.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
# Caps of the labels whose values come from a small, known set (endpoints),
# from providers (error codes) or from configuration (deployments).
MAX_ENDPOINTS = 50
MAX_ERROR_CODES = 200
MAX_DEPLOYMENTS = 500
MAX_BREAKER_STATES = 10
BREAKER_STATES = ("closed", "open", "half_open")

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
OVERHEAD_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
TOKEN_BUCKETS = (
    "input",
    "cached_input",
    "cache_write_5m",
    "cache_write_1h",
    "output",
    "reasoning",
    "audio_input",
    "audio_output",
)


class LabelCap:
    """Admits the first `limit` distinct values of a label; the rest become "other"."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self._seen:  # the common case: no lock
            return value
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) >= self.limit:
                return OTHER
            self._seen.add(value)
            return value


def multiprocess_mode() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class GatewayMetrics:
    """Every metric of the gateway, in one registry of its own."""

    def __init__(self, registry: CollectorRegistry, *, max_models: int = 500, max_tenants: int = 1000) -> None:
        self.registry = registry
        self.model = LabelCap(max_models)
        self.tenant = LabelCap(max_tenants)
        self.endpoint = LabelCap(MAX_ENDPOINTS)
        self.code = LabelCap(MAX_ERROR_CODES)
        self.deployment = LabelCap(MAX_DEPLOYMENTS)
        self.breaker_state_name = LabelCap(MAX_BREAKER_STATES)
        r = registry
        self.requests = Counter(
            "gateway_requests",
            "Requests that reached an upstream or the cache.",
            ["model", "tenant", "status_class", "endpoint"],
            registry=r,
        )
        self.tokens = Counter("gateway_tokens", "Tokens by disjoint bucket.", ["model", "tenant", "bucket"], registry=r)
        self.cost = Counter(
            "gateway_cost_usd",
            "Cost in USD (the ledger is exact; this is for graphs).",
            ["model", "tenant"],
            registry=r,
        )
        self.latency = Histogram(
            "gateway_request_duration_seconds",
            "Total request time, upstream included.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "gateway_time_to_first_token_seconds",
            "Time to the first streamed token.",
            ["model"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.cache = Counter(
            "gateway_cache_lookups", "Response cache lookups by result (hit, miss, bypass).", ["result"], registry=r
        )
        self.upstream_errors = Counter(
            "gateway_upstream_errors", "Requests that reached an upstream and failed.", ["model", "code"], registry=r
        )
        self.refusals = Counter(
            "gateway_refusals", "Requests refused before any upstream, by error code.", ["code"], registry=r
        )
        # Kind, action and stage come from small fixed sets (proxy.guardrails.rules): no cap needed.
        self.guardrail_verdicts = Counter(
            "gateway_guardrail_verdicts",
            "Guardrail matches acted on (a block counts once), by kind, action and stage.",
            ["kind", "action", "stage"],
            registry=r,
        )
        self.overhead = Histogram(
            "gateway_overhead_seconds", "Time the gateway adds to a request.", buckets=OVERHEAD_BUCKETS, registry=r
        )
        self.upstream = Histogram(
            "gateway_upstream_seconds", "Time spent waiting on the upstream.", buckets=LATENCY_BUCKETS, registry=r
        )
        # Read from the meter at scrape time (and on every event, which is
        # what other processes' values are in multiprocess mode).
        self.queue_depth = Gauge(
            "gateway_usage_queue_depth", "Usage events waiting to be written.", registry=r, multiprocess_mode="livesum"
        )
        self.in_flight = Gauge(
            "gateway_requests_in_flight",
            "Requests whose usage is not known yet.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.realtime_sessions = Gauge(
            "gateway_realtime_sessions",
            "Realtime WebSocket sessions open (/v1/realtime).",
            registry=r,
            multiprocess_mode="livesum",
        )
        # Each process has its own breakers: "livemax" reads as "open in some process".
        self.breaker = Gauge(
            "gateway_breaker_state",
            "1 for the state a deployment's circuit breaker is in.",
            ["deployment", "state"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self._breaker_states: dict[str, set[str]] = {}

    def record_usage_event(self, event: UsageEvent) -> None:
        """Count one event; called by the meter on the pushing thread, so only cheap updates."""
        model, tenant = self.model(event.public_model), self.tenant(str(event.tenant_id))
        status_class = f"{event.status_code // 100}xx"
        self.requests.labels(model, tenant, status_class, self.endpoint(event.endpoint)).inc()
        usage = event.usage
        counts = (
            usage.input_tokens,
            usage.cached_input_tokens,
            usage.cache_write_5m_tokens,
            usage.cache_write_1h_tokens,
            usage.output_tokens,
            usage.reasoning_tokens,
            usage.audio_input_tokens,
            usage.audio_output_tokens,
        )
        for bucket, count in zip(TOKEN_BUCKETS, counts, strict=True):
            if count:
                self.tokens.labels(model, tenant, bucket).inc(count)
        if event.cost_nanos:
            self.cost.labels(model, tenant).inc(event.cost_nanos / 1e9)
        self.latency.labels(model).observe(event.latency_ms / 1000)
        if event.ttft_ms is not None:
            self.ttft.labels(model).observe(event.ttft_ms / 1000)
        if event.cache_status or event.cache_hit:
            self.cache.labels(event.cache_status or "hit").inc()
        if event.error_code or event.status_code >= 400:
            self.upstream_errors.labels(model, self.code(event.error_code or f"http_{event.status_code}")).inc()
        self.refresh_gauges()

    def count_refusal(self, code: str) -> None:
        self.refusals.labels(self.code(code)).inc()

    def count_guardrail_verdict(self, kind: str, action: str, stage: str, count: int) -> None:
        self.guardrail_verdicts.labels(kind, action, stage).inc(count)

    def set_breaker_state(self, deployment: str, state: str) -> None:
        """Mark `state` as the breaker's current one (1) and every other state it was in as 0."""
        deployment, state = self.deployment(deployment), self.breaker_state_name(state)
        known = self._breaker_states.setdefault(deployment, set(BREAKER_STATES))
        known.add(state)
        for name in known:
            self.breaker.labels(deployment, name).set(1 if name == state else 0)

    def refresh_gauges(self) -> None:
        self.queue_depth.set(meter.pending)
        self.in_flight.set(meter.inflight)
        self.realtime_sessions.set(sessions_open())

    def exposition(self) -> bytes:
        """The text format: this registry, or every process's files in multiprocess mode."""
        self.refresh_gauges()
        if not multiprocess_mode():
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        return generate_latest(merged)


REGISTRY = CollectorRegistry()
metrics = GatewayMetrics(
    REGISTRY,
    max_models=getattr(settings, "METRICS_MAX_MODELS", 500),
    max_tenants=getattr(settings, "METRICS_MAX_TENANTS", 1000),
)
record_usage_event = metrics.record_usage_event
count_refusal = metrics.count_refusal
set_breaker_state = metrics.set_breaker_state


def observe_overhead(seconds: float) -> None:
    metrics.overhead.observe(seconds)


def observe_upstream(seconds: float) -> None:
    metrics.upstream.observe(seconds)


meter.listen(record_usage_event)
state_listeners.append(set_breaker_state)
verdict_listeners.append(metrics.count_guardrail_verdict)
session_listeners.append(metrics.realtime_sessions.set)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """GET /metrics; with METRICS_TOKEN set, only for `Authorization: Bearer <token>`."""
    token = getattr(settings, "METRICS_TOKEN", "")
    if token and not _bearer_matches(request, token):
        body = b'{"error": {"code": "invalid_token", "message": "A valid metrics token is required."}}'
        response = HttpResponse(body, status=401, content_type="application/json")
        response["WWW-Authenticate"] = "Bearer"
        return response
    return HttpResponse(metrics.exposition(), content_type=CONTENT_TYPE)


def _bearer_matches(request: HttpRequest, token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
