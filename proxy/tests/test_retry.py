"""Which failures are retried, and how long to wait between attempts (pure)."""

import asyncio
import random
from typing import Any

import aiohttp
import pytest

from gateway.kernel.errors import GatewayError
from proxy.retry import RetryPolicy, no_healthy_upstream, retry_after_seconds, retry_policy

POLICY = RetryPolicy(
    attempts=3, retry_on_status=frozenset({429, 500, 502, 503, 504}), backoff_base=0.1, backoff_max=2.0
)
NOW = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC


class Top(random.Random):
    """Full jitter at its top: uniform(0, b) gives b."""

    def random(self) -> float:
        return 1.0


@pytest.mark.parametrize(
    ("status", "exc", "expected"),
    [
        (429, None, True),
        (503, None, True),
        (400, None, False),
        (401, None, False),
        (501, None, False),
        (None, None, False),
        (None, TimeoutError(), True),
        (None, aiohttp.ServerDisconnectedError(), True),
        (None, aiohttp.ClientConnectorError(None, OSError(111, "refused")), True),
        (None, ConnectionResetError(), True),
        (None, GatewayError(502, "upstream_unreachable", "x"), True),
        (None, GatewayError(504, "upstream_timeout", "x"), True),
        (None, GatewayError(400, "invalid_request", "x"), False),
        (None, ValueError("a bug is not retried"), False),
        (None, asyncio.CancelledError(), False),
    ],
)
def test_transport_failures_and_the_configured_statuses_are_retried(
    status: int | None, exc: BaseException | None, expected: bool
) -> None:
    assert POLICY.should_retry(status, exc) is expected


def test_the_backoff_doubles_up_to_the_maximum_with_full_jitter() -> None:
    assert [POLICY.backoff_delay(n, None, Top()) for n in (1, 2, 3, 4, 5, 6)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0]
    rng = random.Random(3)
    delays = [delay for _ in range(1000) if (delay := POLICY.backoff_delay(3, None, rng)) is not None]
    assert len(delays) == 1000
    assert all(0 <= d <= 0.4 for d in delays) and min(delays) < 0.01 and max(delays) > 0.39


def test_a_retry_after_within_the_maximum_is_waited_at_least() -> None:
    assert POLICY.backoff_delay(1, "1.5", Top()) == 1.5
    assert POLICY.backoff_delay(6, "0", Top()) == 2.0  # the backoff is longer: it wins


def test_a_retry_after_beyond_the_maximum_means_do_not_wait() -> None:
    assert POLICY.backoff_delay(1, "3", Top()) is None
    assert POLICY.backoff_delay(1, "Wed, 21 Oct 2099 07:28:00 GMT", Top()) is None


def test_an_unreadable_retry_after_falls_back_to_the_backoff() -> None:
    assert POLICY.backoff_delay(2, "soon", Top()) == 0.2


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 2.5 ", 2.5),
        ("-4", 0.0),
        ("Fri, 15 Jan 2027 08:00:30 GMT", 30.0),
        ("Fri, 15 Jan 2027 07:59:00 GMT", 0.0),  # in the past: now
        ("Friday, 15-Jan-27 08:01:00 GMT", 60.0),  # the obsolete RFC 850 form too
        ("later", None),
        ("inf", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_is_read_as_seconds_or_an_http_date(header: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(header, now=NOW) == seconds


def test_the_policy_comes_from_the_settings(settings: Any) -> None:
    settings.PROXY_RETRY_ATTEMPTS, settings.PROXY_RETRY_ON_STATUS = 5, "429, 529"
    settings.PROXY_RETRY_BACKOFF_BASE, settings.PROXY_RETRY_BACKOFF_MAX = 0.5, 8
    assert retry_policy() == RetryPolicy(
        attempts=5, retry_on_status=frozenset({429, 529}), backoff_base=0.5, backoff_max=8.0
    )


def test_the_default_settings_retry_429_and_5xx_three_times_in_all() -> None:
    assert retry_policy() == POLICY


def test_no_healthy_upstream_is_a_503_that_says_when_to_come_back() -> None:
    error = no_healthy_upstream("smart", 12.2)
    assert (error.status, error.code, error.headers, error.retryable) == (
        503,
        "no_healthy_upstream",
        {"Retry-After": "13"},
        True,
    )
    assert error.message == "No provider for the model 'smart' is available right now. Try again in 13s."
    assert no_healthy_upstream("smart", None).headers == {"Retry-After": "1"}
