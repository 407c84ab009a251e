"""The circuit breaker end to end: a deployment that keeps failing is
skipped (the upstream sees no more requests for it) until the cooldown has
passed, then one probe decides whether it is taken back; when every
deployment of a route is open the request is sent anyway, to the one open
longest (Envoy's panic mode), so a blip is never an outage.

A gateway of its own opens a circuit after FAILURES failures and keeps it
open for COOLDOWN seconds; every route here is used by one test only, so
the circuits of one test are not another's.
"""

import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import IssuedKey, Ledger, unique_marker
from proxy.tests.fake_upstream import FakeUpstream
from proxy.tests.live import LiveGateway
from proxy.tests.test_faults import (
    QUICK,
    RESILIENCE_ENV,
    Answer,
    Dep,
    assert_openai_error,
    chat,
    route,
    routes_create,
    seen_upstream,
)

FAILURES = 3
COOLDOWN = 1.5  # seconds

ROUTES = {
    "recovers": [Dep("fake-flaky-503-3", 0), Dep("gpt-up", 1)],  # fails 3 times per marker, then answers
    "stays-down": [Dep("fake-error-503", 0), Dep("gpt-up", 1)],
    "all-down": [Dep("fake-error-500", 0), Dep("fake-error-503", 1)],
    "blip": [Dep("fake-flaky-502-3", 0)],  # its own upstream model: its own circuit
}


@pytest.fixture(scope="module")
def gateway(gateway_config: None, django_db_blocker: Any, fake_upstream: FakeUpstream) -> Iterator[LiveGateway]:
    routes_create(django_db_blocker, fake_upstream, ROUTES)
    env = {
        **RESILIENCE_ENV,
        "PROXY_BREAKER_FAILURES": str(FAILURES),
        "PROXY_BREAKER_WINDOW_SECONDS": "60",
        "PROXY_BREAKER_COOLDOWN_SECONDS": str(COOLDOWN),
    }
    live = LiveGateway(env=env).start()
    yield live
    live.terminate()


def answered_by(answer: Answer) -> tuple[int, str | None, str | None]:
    return answer.status, answer.deployment, answer.attempts


def open_the_circuit(gateway: LiveGateway, key: IssuedKey, name: str, marker: str) -> float:
    """FAILURES requests whose first attempt fails and whose second answers;
    returns when the last failure happened (the cooldown runs from there)."""
    for _ in range(FAILURES):
        assert answered_by(chat(gateway, key, route(name), marker)) == (200, f"{QUICK}/gpt-up", "2")
    return time.monotonic()


def test_a_deployment_that_failed_n_times_is_skipped_until_the_cooldown_then_a_good_probe_takes_it_back(
    gateway: LiveGateway, key: IssuedKey, ledger: Ledger, fake_upstream: FakeUpstream
) -> None:
    marker, flaky = unique_marker(), "fake-flaky-503-3"
    opened = open_the_circuit(gateway, key, "recovers", marker)
    assert len(seen_upstream(fake_upstream, marker, flaky)) == FAILURES
    for _ in range(2):  # skipped: straight to the healthy deployment
        assert answered_by(chat(gateway, key, route("recovers"), marker)) == (200, f"{QUICK}/gpt-up", "1")
    assert len(seen_upstream(fake_upstream, marker, flaky)) == FAILURES
    assert breaker_states(gateway, flaky) == {"open"}
    time.sleep(max(opened + COOLDOWN + 0.2 - time.monotonic(), 0))
    for seen in (FAILURES + 1, FAILURES + 2):  # the probe answers, and the circuit is closed again
        assert answered_by(chat(gateway, key, route("recovers"), marker)) == (200, f"{QUICK}/{flaky}", "1")
        assert len(seen_upstream(fake_upstream, marker, flaky)) == seen
    records = ledger.wait(key.key_id, 2 * FAILURES + 2 + 2)
    failed = [(r.status_code, r.upstream_model) for r in records if "~" in r.request_id]
    assert failed == [(503, flaky)] * FAILURES
    assert breaker_states(gateway, flaky) == {"closed"}


def breaker_states(gateway: LiveGateway, upstream_model: str) -> set[str]:
    """The states /metrics shows as current for breakers of that upstream model."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(gateway.url + "/metrics", timeout=10).read().decode()
    [family] = [f for f in text_string_to_metric_families(text) if f.name == "gateway_breaker_state"]
    return {
        s.labels["state"] for s in family.samples if s.labels["deployment"].endswith(":" + upstream_model) and s.value
    }


def test_a_probe_that_fails_keeps_the_deployment_out_for_another_cooldown(
    gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream
) -> None:
    marker, failing = unique_marker(), "fake-error-503"
    opened = open_the_circuit(gateway, key, "stays-down", marker)
    assert answered_by(chat(gateway, key, route("stays-down"), marker)) == (200, f"{QUICK}/gpt-up", "1")
    time.sleep(max(opened + COOLDOWN + 0.2 - time.monotonic(), 0))
    # The one probe fails, and the healthy deployment still answers that request.
    assert answered_by(chat(gateway, key, route("stays-down"), marker)) == (200, f"{QUICK}/gpt-up", "2")
    assert len(seen_upstream(fake_upstream, marker, failing)) == FAILURES + 1
    for _ in range(2):
        assert answered_by(chat(gateway, key, route("stays-down"), marker)) == (200, f"{QUICK}/gpt-up", "1")
    assert len(seen_upstream(fake_upstream, marker, failing)) == FAILURES + 1


def test_when_every_deployment_is_open_the_request_is_still_sent_to_the_one_open_longest(
    gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream
) -> None:
    marker = unique_marker()
    for _ in range(FAILURES):  # both deployments fail each time: the client gets the last error
        answer = chat(gateway, key, route("all-down"), marker)
        assert_openai_error(answer, 503, "fake_503", "overloaded_error")
        assert answer.attempts == "2"
    answer = chat(gateway, key, route("all-down"), marker)  # both open now: sent anyway, once
    assert (answer.status, answer.attempts) == (500, "1")
    assert len(seen_upstream(fake_upstream, marker, "fake-error-500")) == FAILURES + 1  # opened first, closes first
    assert len(seen_upstream(fake_upstream, marker, "fake-error-503")) == FAILURES


def test_an_upstream_blip_behind_a_single_deployment_is_no_outage(
    gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream
) -> None:
    marker = unique_marker()
    for _ in range(FAILURES):  # the blip: the only deployment fails until its circuit opens
        assert chat(gateway, key, route("blip"), marker).status == 502
    assert breaker_states(gateway, "fake-flaky-502-3") == {"open"}
    answer = chat(gateway, key, route("blip"), marker)  # the upstream is back; the circuit still open
    assert (answer.status, answer.deployment) == (200, f"{QUICK}/fake-flaky-502-3")
