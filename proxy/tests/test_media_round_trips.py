"""A priced media request costs one Redis round trip, as a chat request does:
its worst case (seconds of audio, images at their size and quality) is
reserved in the admission's script call, and the attempt takes that
reservation instead of calling Redis again.

Counted by Redis itself (`INFO commandstats`) on a redis-server of the
test's own, on the PostgreSQL + Redis run (see
billing/tests/test_redis_round_trips.py).
"""

import os
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import openai
import pytest

from bench.redis_counts import Counts, commandstats, gateway_scripts, private_redis, scripted_commands
from conftest import IssuedKey, Ledger
from proxy.tests.fake_media import FakeMedia
from proxy.tests.live import LiveGateway
from proxy.tests.test_media_endpoints import wav

pytestmark = pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="the PostgreSQL + Redis run")

SUFFIX = uuid.uuid4().hex[:8]  # names of this module's own, beside the media tests' routes
WHISPER, DALLE = f"rt-whisper-{SUFFIX}", f"rt-dalle-{SUFFIX}"
HD_IMAGE = Decimal("0.08")  # USD, hd/1024-x-1024


@pytest.fixture(scope="module")
def fake_media() -> Iterator[FakeMedia]:
    fake = FakeMedia().start_in_thread()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def media_routes(django_db_setup: None, django_db_blocker: Any, fake_media: FakeMedia) -> None:
    from billing.services import price_set
    from proxy.services import provider_upsert, route_upsert

    with django_db_blocker.unblock():
        provider, _ = provider_upsert(name=f"rt-media-{SUFFIX}", kind="openai", base_url=fake_media.url + "/v1")
        route_upsert(model=WHISPER, provider=provider, upstream_model=f"whisper-up-{SUFFIX}")
        route_upsert(model=DALLE, provider=provider, upstream_model=f"dall-e-up-{SUFFIX}")
        zero = {"input_usd": Decimal(0), "output_usd": Decimal(0)}
        price_set(model=f"whisper-up-{SUFFIX}", **zero, input_usd_per_second=Decimal("0.0001"))
        price_set(model=f"hd/1024-x-1024/dall-e-up-{SUFFIX}", **zero, output_usd_per_image=HD_IMAGE)


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    try:
        with private_redis() as url:
            yield url
    except RuntimeError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def gateway(media_routes: None, redis_url: str) -> Iterator[LiveGateway]:
    env = {
        "REDIS_URL": redis_url,
        # Nothing polls or renews while a test counts: what is left is the request's.
        "GATEWAY_CONFIG_POLL_SECONDS": "600",
        "BILLING_RESERVATION_LEASE_SECONDS": "300",
        "PROXY_INFLIGHT_LEASE_SECONDS": "300",
        "BILLING_SETTLE_FLUSH_SECONDS": "600",  # a settlement rides on the next request's call
    }
    live = LiveGateway(env=env, server="uvicorn").start()
    yield live
    live.terminate()


def budgeted_key(issue_key: Callable[..., IssuedKey], blocker: Any, limit_usd: Decimal) -> IssuedKey:
    from accounts.models import ApiKey
    from billing.services import budget_set

    key = issue_key(rpm_limit=100_000, tpm_limit=10_000_000, max_parallel=1000)
    with blocker.unblock():
        budget_set(api_key=ApiKey.objects.get(pk=key.key_id), limit_usd=limit_usd, period="month")
    return key


def round_trips_of(redis_url: str, send: Callable[[], Any]) -> Counts:
    before = commandstats(redis_url)
    send()
    return Counts.between(before, commandstats(redis_url), scripted_commands(*gateway_scripts()))


def client_for(gateway: LiveGateway, key: IssuedKey) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key.plaintext, max_retries=0, timeout=20)


def test_a_priced_transcription_costs_one_redis_round_trip(
    gateway: LiveGateway, redis_url: str, issue_key: Callable[..., IssuedKey], ledger: Ledger, django_db_blocker: Any
) -> None:
    key = budgeted_key(issue_key, django_db_blocker, Decimal("10"))
    client = client_for(gateway, key)

    def transcribe() -> None:
        client.audio.transcriptions.create(model=WHISPER, file=("a.wav", wav(2.0)), response_format="text")

    transcribe()  # the key's snapshot, the scripts loaded
    counts = round_trips_of(redis_url, transcribe)

    assert counts.other == {}, counts.calls
    assert counts.round_trips == 1, counts.per_request(1)
    rows = ledger.wait(key.key_id, 2)
    assert [r.cost_nanos for r in rows] == [200_000, 200_000]  # the WAV header's 2 s at $0.0001


def test_a_priced_image_costs_one_round_trip_and_a_budget_that_fits_one_image_refuses_the_second(
    gateway: LiveGateway,
    redis_url: str,
    issue_key: Callable[..., IssuedKey],
    ledger: Ledger,
    django_db_blocker: Any,
    fake_media: FakeMedia,
) -> None:
    warm = client_for(gateway, budgeted_key(issue_key, django_db_blocker, Decimal("10")))
    warm.images.generate(model=DALLE, prompt="A hen", size="1024x1024", quality="hd")  # the scripts loaded
    key = budgeted_key(issue_key, django_db_blocker, HD_IMAGE + Decimal("0.03"))  # one image fits, two do not
    client = client_for(gateway, key)

    def draw() -> Any:
        return client.images.generate(model=DALLE, prompt="A fox", size="1024x1024", quality="hd")

    counts = round_trips_of(redis_url, draw)
    assert counts.other == {}, counts.calls
    assert counts.round_trips == 1, counts.per_request(1)
    [row] = ledger.wait(key.key_id, 1)
    assert row.cost_nanos == 80_000_000

    before = len(fake_media.requests)
    with pytest.raises(openai.APIStatusError) as caught:  # $0.08 spent, $0.03 left: below one image
        draw()
    assert caught.value.code == "budget_exceeded"
    assert len(fake_media.requests) == before
    assert len(ledger.wait(key.key_id, 1)) == 1  # the refusal is not billed
