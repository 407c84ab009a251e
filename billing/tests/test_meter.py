"""The usage meter: batched writes, retries that keep order, the shutdown spool and its replay."""

import asyncio
import dataclasses
import datetime as dt
import re
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from django.db import OperationalError

from accounts.models import ApiKey, Tenant
from accounts.services import api_key_issue, tenant_create
from billing import spool as spool_module
from billing.journal import UsageJournal
from billing.meter import UsageMeter
from billing.models import UsageRecord
from billing.spool import usage_event_from_json, usage_spool_replay
from billing.tasks import usage_spool_replay_task
from gateway.kernel.context import Usage, UsageEvent

CREATED_AT = dt.datetime(2025, 3, 4, 5, 6, 7, 891011, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def disk_of_its_own(settings: Any, tmp_path: Path) -> None:
    """Each test's meters journal and set aside in folders of their own:
    what a test leaves on disk must not reach the books of a later one."""
    settings.BILLING_JOURNAL_DIR = tmp_path / "journal"
    settings.BILLING_SPOOL_DIR = tmp_path / "spool"


@pytest.fixture
def owner() -> tuple[Tenant, ApiKey]:
    tenant = tenant_create(slug="metered")
    _, api_key = api_key_issue(tenant=tenant, name="meter")
    return tenant, api_key


def event(request_id: str, tenant_id: int = 1, key_id: int = 1, **changes: Any) -> UsageEvent:
    """An event with no field left at its default."""
    values: dict[str, Any] = {
        "request_id": request_id,
        "created_at": CREATED_AT,
        "tenant_id": tenant_id,
        "key_id": key_id,
        "endpoint": "chat.completions",
        "public_model": "gpt-test",
        "upstream_model": "gpt-up",
        "provider": "fake",
        "status_code": 499,
        "usage": Usage(input_tokens=11, cached_input_tokens=22, output_tokens=33, reasoning_tokens=44),
        "cost_nanos": 12_345,
        "latency_ms": 321,
        "stream": True,
        "error_code": "client_disconnected",
        "usage_estimated": True,
        "client_disconnected": True,
        "ttft_ms": 87,
    }
    values.update(changes)
    return UsageEvent(**values)


def owned(owner: tuple[Tenant, ApiKey], request_id: str, **changes: Any) -> UsageEvent:
    tenant, api_key = owner
    return event(request_id, tenant_id=tenant.pk, key_id=api_key.pk, **changes)


def stored_ids() -> list[str]:
    return sorted(UsageRecord.objects.values_list("request_id", flat=True))


def database_down(events: Any, **_: Any) -> None:
    raise OSError("database is down")


@pytest.fixture
def spool_dir(settings: Any, tmp_path: Path) -> Path:
    settings.BILLING_SPOOL_DIR = tmp_path / "spool"  # not created yet: spool() must make it
    return settings.BILLING_SPOOL_DIR


# --- flushing ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_flush_writes_one_record_per_event_with_every_field(owner: tuple[Tenant, ApiKey]) -> None:
    tenant, api_key = owner
    meter = UsageMeter()
    meter.push(owned(owner, "req-1"))
    meter.push(
        owned(
            owner,
            "req-2",
            status_code=200,
            error_code="",
            stream=False,
            ttft_ms=None,
            usage_estimated=False,
            client_disconnected=False,
            cost_nanos=0,
        )
    )

    assert meter.flush_sync() == 2

    assert meter.pending == 0
    first = UsageRecord.objects.get(request_id="req-1")
    assert (first.created_at, first.tenant_id, first.api_key_id) == (CREATED_AT, tenant.pk, api_key.pk)
    assert (first.endpoint, first.public_model, first.upstream_model, first.provider) == (
        "chat.completions",
        "gpt-test",
        "gpt-up",
        "fake",
    )
    assert (first.status_code, first.error_code, first.stream) == (499, "client_disconnected", True)
    assert (first.client_disconnected, first.usage_estimated) == (True, True)
    assert (first.input_tokens, first.cached_input_tokens, first.output_tokens, first.reasoning_tokens) == (
        11,
        22,
        33,
        44,
    )
    assert (first.cost_nanos, first.latency_ms, first.ttft_ms) == (12_345, 321, 87)
    assert first.cost_usd == Decimal("0.000012345")  # 12_345 nanos

    second = UsageRecord.objects.get(request_id="req-2")
    assert (second.status_code, second.error_code, second.stream, second.ttft_ms, second.cost_nanos) == (
        200,
        "",
        False,
        None,
        0,
    )
    assert (second.usage_estimated, second.client_disconnected) == (False, False)


@pytest.mark.django_db
def test_flushing_an_empty_meter_writes_nothing() -> None:
    assert UsageMeter().flush_sync() == 0
    assert UsageRecord.objects.count() == 0


@pytest.mark.django_db
def test_the_same_request_id_flushed_twice_is_stored_once(owner: tuple[Tenant, ApiKey]) -> None:
    meter = UsageMeter()
    meter.push(owned(owner, "req-1"))
    meter.flush_sync()

    meter.push(owned(owner, "req-1", cost_nanos=99_999))  # a retry of a batch that did land
    meter.flush_sync()

    assert stored_ids() == ["req-1"]
    assert UsageRecord.objects.get(request_id="req-1").cost_nanos == 12_345  # the first write stands


@pytest.mark.django_db
def test_a_retried_batch_adds_to_the_budget_only_what_it_stores_anew(owner: tuple[Tenant, ApiKey]) -> None:
    from billing.ledger import usage_events_store
    from billing.models import BudgetSpend
    from billing.services import budget_set

    budget_set(api_key=owner[1], limit_usd=Decimal("1"), period="total")
    assert usage_events_store([owned(owner, "req-1", cost_nanos=1_000)]) == 1

    # req-1 landed before the connection was lost: the retry holds it again
    retried = [owned(owner, "req-1", cost_nanos=1_000), owned(owner, "req-2", cost_nanos=20)]
    assert usage_events_store(retried) == 1

    assert stored_ids() == ["req-1", "req-2"]
    assert BudgetSpend.objects.get().spent_nanos == 1_020


@pytest.mark.django_db
def test_a_duplicate_inside_one_batch_is_stored_once(owner: tuple[Tenant, ApiKey]) -> None:
    meter = UsageMeter()
    meter.push(owned(owner, "req-1"))
    meter.push(owned(owner, "req-1"))
    meter.push(owned(owner, "req-2"))

    meter.flush_sync()

    assert stored_ids() == ["req-1", "req-2"]


def test_when_the_store_fails_the_events_stay_queued_in_order(monkeypatch: Any) -> None:
    meter = UsageMeter()
    for request_id in ("a", "b", "c"):
        meter.push(event(request_id))

    monkeypatch.setattr(spool_module, "usage_events_store", database_down)
    with pytest.raises(OSError, match="database is down"):
        meter.flush_sync()

    assert meter.pending == 3
    assert [e.request_id for e in meter.take(10)] == ["a", "b", "c"]


def test_a_failure_on_a_later_batch_keeps_only_the_unwritten_events_in_order(monkeypatch: Any, settings: Any) -> None:
    settings.BILLING_METER_BATCH_SIZE = 2
    meter = UsageMeter()
    for request_id in ("a", "b", "c", "d", "e"):
        meter.push(event(request_id))
    batches: list[list[str]] = []
    down = False

    def down_after_the_first_batch(events: Any, **_: Any) -> None:
        nonlocal down
        if down:
            batches.append(["<failed>"])
            raise OperationalError("database is down")
        batches.append([e.request_id for e in events])
        down = True

    monkeypatch.setattr(spool_module, "usage_events_store", down_after_the_first_batch)
    with pytest.raises(OperationalError):
        meter.flush_sync()

    # One try of the next batch: an unreachable database is not asked again per event.
    assert batches == [["a", "b"], ["<failed>"]]
    assert meter.pending == 3
    down = False
    monkeypatch.setattr(
        spool_module, "usage_events_store", lambda events, **_: batches.append([e.request_id for e in events])
    )
    assert meter.flush_sync() == 3
    assert batches[-2:] == [["c", "d"], ["e"]]


@pytest.mark.django_db
def test_events_kept_after_a_failed_flush_are_written_by_the_next_one(
    owner: tuple[Tenant, ApiKey], monkeypatch: Any
) -> None:
    meter = UsageMeter()
    for request_id in ("a", "b", "c"):
        meter.push(owned(owner, request_id))
    with monkeypatch.context() as patch:
        patch.setattr(spool_module, "usage_events_store", database_down)
        with pytest.raises(OSError):
            meter.flush_sync()
    assert UsageRecord.objects.count() == 0

    assert meter.flush_sync() == 3

    assert stored_ids() == ["a", "b", "c"]
    assert meter.pending == 0


# --- spool and replay ---------------------------------------------------------------------


def test_spool_writes_every_queued_event_as_one_json_line(spool_dir: Path) -> None:
    meter = UsageMeter()
    first, second = event("req-1"), event("req-2", ttft_ms=None)
    meter.push(first)
    meter.push(second)

    path = meter.spool()

    assert path is not None and path.parent == spool_dir
    assert re.fullmatch(r"usage-\d+-[0-9a-f]{32}\.jsonl", path.name)
    assert meter.pending == 0
    lines = path.read_bytes().splitlines()
    assert len(lines) == 2
    assert orjson.loads(lines[0])["request_id"] == "req-1"
    assert orjson.loads(lines[0])["usage"] == {
        "input_tokens": 11,
        "cached_input_tokens": 22,
        "cache_write_5m_tokens": 0,
        "cache_write_1h_tokens": 0,
        "output_tokens": 33,
        "reasoning_tokens": 44,
        "audio_input_tokens": 0,
        "audio_output_tokens": 0,
        "image_input_tokens": 0,
        "image_output_tokens": 0,
        "audio_input_ms": 0,
        "input_characters": 0,
        "output_images": 0,
    }
    # Every field survives the round trip, the datetime to the microsecond.
    assert [usage_event_from_json(line) for line in lines] == [first, second]


def test_spooling_an_empty_meter_writes_no_file(spool_dir: Path) -> None:
    assert UsageMeter().spool() is None
    assert not spool_dir.exists() or list(spool_dir.iterdir()) == []


def test_replaying_a_folder_that_does_not_exist_stores_nothing(spool_dir: Path) -> None:
    assert usage_spool_replay() == 0


@pytest.mark.django_db
def test_replay_stores_the_spooled_events_and_deletes_the_file(owner: tuple[Tenant, ApiKey], spool_dir: Path) -> None:
    meter = UsageMeter()
    events = [owned(owner, f"req-{i}") for i in range(3)]
    for e in events:
        meter.push(e)
    path = meter.spool()
    assert path is not None and path.exists()

    assert usage_spool_replay() == 3

    assert stored_ids() == ["req-0", "req-1", "req-2"]
    assert list(spool_dir.iterdir()) == []
    record = UsageRecord.objects.get(request_id="req-1")
    assert (record.created_at, record.cost_nanos, record.ttft_ms, record.reasoning_tokens) == (
        CREATED_AT,
        12_345,
        87,
        44,
    )

    # Nothing left: a second replay stores nothing new.
    assert usage_spool_replay() == 0
    assert UsageRecord.objects.count() == 3


@pytest.mark.django_db
def test_replaying_events_already_in_the_ledger_does_not_count_them_twice(
    owner: tuple[Tenant, ApiKey], spool_dir: Path
) -> None:
    meter = UsageMeter()
    meter.push(owned(owner, "req-1"))
    meter.flush_sync()
    meter.push(owned(owner, "req-1"))
    meter.push(owned(owner, "req-2"))
    meter.spool()

    usage_spool_replay()

    assert stored_ids() == ["req-1", "req-2"]


@pytest.mark.django_db
def test_replay_stores_files_in_batches_of_the_configured_size(
    owner: tuple[Tenant, ApiKey], spool_dir: Path, settings: Any, monkeypatch: Any
) -> None:
    settings.BILLING_METER_BATCH_SIZE = 2
    meter = UsageMeter()
    for i in range(5):
        meter.push(owned(owner, f"req-{i}"))
    meter.spool()
    sizes: list[int] = []
    real_store = spool_module.usage_events_store

    def counting_store(events: list[UsageEvent], **_: Any) -> None:
        sizes.append(len(events))
        real_store(events)

    monkeypatch.setattr(spool_module, "usage_events_store", counting_store)

    assert usage_spool_replay() == 5
    assert sizes == [2, 2, 1]
    assert UsageRecord.objects.count() == 5


@pytest.mark.django_db
def test_the_replay_task_stores_the_spool_and_deletes_it(owner: tuple[Tenant, ApiKey], spool_dir: Path) -> None:
    meter = UsageMeter()
    meter.push(owned(owner, "req-1"))
    meter.push(owned(owner, "req-2"))
    meter.spool()

    assert usage_spool_replay_task() == 2

    assert stored_ids() == ["req-1", "req-2"]
    assert list(spool_dir.iterdir()) == []
    assert usage_spool_replay_task() == 0
    assert UsageRecord.objects.count() == 2


@pytest.mark.django_db
def test_a_replay_that_fails_leaves_the_spool_for_the_next_replay(
    owner: tuple[Tenant, ApiKey], spool_dir: Path, monkeypatch: Any
) -> None:
    meter = UsageMeter()
    meter.push(owned(owner, "req-1"))
    meter.push(owned(owner, "req-2"))
    meter.spool()

    with monkeypatch.context() as patch:
        patch.setattr(spool_module, "usage_events_store", database_down)
        with pytest.raises(OSError):
            usage_spool_replay()

    # The database is back: the next scheduled replay must load what the failed one could not.
    assert usage_spool_replay() == 2
    assert stored_ids() == ["req-1", "req-2"]


# --- drain at shutdown --------------------------------------------------------------------------


class NeverFinishes:
    """An open stream that would run forever; abandon() records what was seen."""

    def __init__(self, meter: UsageMeter, usage_event: UsageEvent) -> None:
        self.meter = meter
        self.event = usage_event
        self.abandoned_at: float | None = None

    def abandon(self) -> None:
        self.abandoned_at = time.monotonic()
        self.meter.untrack(self)
        self.meter.push(self.event)


def recording_store(monkeypatch: Any) -> list[str]:
    stored: list[str] = []
    monkeypatch.setattr(
        spool_module, "usage_events_store", lambda events, **_: stored.extend(e.request_id for e in events)
    )
    return stored


def test_drain_abandons_a_stream_that_outlives_the_grace_period_and_stores_its_usage(monkeypatch: Any) -> None:
    stored = recording_store(monkeypatch)
    meter = UsageMeter()
    meter.push(event("finished-earlier"))
    stream = NeverFinishes(meter, event("cut-off"))
    meter.track(stream)

    started = time.monotonic()
    asyncio.run(meter.drain(grace_seconds=0.05))

    assert stream.abandoned_at is not None
    assert stream.abandoned_at - started >= 0.05
    assert time.monotonic() - started < 1.0
    assert stored == ["finished-earlier", "cut-off"]
    assert (meter.pending, meter.inflight) == (0, 0)


def test_drain_does_not_abandon_a_stream_that_finishes_within_the_grace_period(monkeypatch: Any) -> None:
    stored = recording_store(monkeypatch)
    meter = UsageMeter()
    stream = NeverFinishes(meter, event("cut-off"))
    meter.track(stream)

    async def shutdown() -> None:
        loop = asyncio.get_running_loop()

        def finish() -> None:
            meter.untrack(stream)
            meter.push(event("completed"))

        loop.call_later(0.02, finish)
        await meter.drain(grace_seconds=5.0)

    started = time.monotonic()
    asyncio.run(shutdown())

    assert stream.abandoned_at is None
    assert time.monotonic() - started < 1.0  # did not wait out the whole grace period
    assert stored == ["completed"]


def test_drain_spools_what_the_database_will_not_take(monkeypatch: Any, spool_dir: Path) -> None:
    monkeypatch.setattr(spool_module, "usage_events_store", database_down)
    meter = UsageMeter()
    meter.push(event("req-1"))
    stream = NeverFinishes(meter, event("req-2"))
    meter.track(stream)

    asyncio.run(meter.drain(grace_seconds=0.05))

    assert meter.pending == 0
    [path] = spool_dir.iterdir()
    assert [usage_event_from_json(line).request_id for line in path.read_bytes().splitlines()] == ["req-1", "req-2"]
    assert [dataclasses.asdict(usage_event_from_json(line)) for line in path.read_bytes().splitlines()] == [
        dataclasses.asdict(event("req-1")),
        dataclasses.asdict(event("req-2")),
    ]


@pytest.mark.django_db
def test_a_line_cut_short_is_set_aside_and_the_rest_of_the_spool_is_stored(
    owner: tuple[Tenant, ApiKey], spool_dir: Path
) -> None:
    meter = UsageMeter()
    meter.push(owned(owner, "req-whole"))
    path = meter.spool()
    assert path is not None
    with path.open("ab") as f:
        f.write(b'{"request_id": "req-half", "tenant')  # the write a crash interrupted

    assert usage_spool_replay() == 1

    assert stored_ids() == ["req-whole"]
    [bad] = list(spool_dir.glob("*.bad"))
    assert bad.read_bytes() == b'{"request_id": "req-half", "tenant\n'


@pytest.mark.django_db
def test_an_event_the_database_refuses_is_found_by_halving_and_the_rest_still_flows(
    owner: tuple[Tenant, ApiKey], monkeypatch: Any, spool_dir: Path, settings: Any
) -> None:
    settings.BILLING_METER_BATCH_SIZE = 100
    real_store = spool_module.usage_events_store
    writes: list[int] = []

    def refuse_poison(events: Any, **_: Any) -> int:
        writes.append(len(events))
        if any(e.request_id == "poison" for e in events):
            raise RuntimeError("value too long")
        return real_store(events)

    monkeypatch.setattr(spool_module, "usage_events_store", refuse_poison)
    meter = UsageMeter()
    for i in range(99):
        meter.push(owned(owner, "poison" if i == 41 else f"ok-{i}"))

    assert meter.flush_sync() == 98
    assert len(stored_ids()) == 98 and "poison" not in stored_ids()
    assert meter.pending == 0
    assert len(writes) <= 2 * 7 + 1  # halving: a logarithm of the batch, not one write per event
    [refused] = list(spool_dir.glob("*.refused"))
    assert [orjson.loads(line)["request_id"] for line in refused.read_bytes().splitlines()] == ["poison"]

    monkeypatch.setattr(spool_module, "usage_events_store", real_store)  # the cause is fixed
    assert usage_spool_replay() == 1
    assert "poison" in stored_ids()
    assert list(spool_dir.iterdir()) == []


@pytest.mark.django_db
def test_an_unreachable_database_sets_nothing_aside_and_is_asked_once_per_flush(
    owner: tuple[Tenant, ApiKey], monkeypatch: Any, spool_dir: Path
) -> None:
    writes: list[int] = []

    def unreachable(events: Any, **_: Any) -> int:
        writes.append(len(events))
        raise OperationalError("connection timeout expired")

    monkeypatch.setattr(spool_module, "usage_events_store", unreachable)
    meter = UsageMeter()
    for i in range(20):
        meter.push(owned(owner, f"req-{i}"))

    with pytest.raises(OperationalError):
        meter.flush_sync()
    assert writes == [20]  # not twenty connection attempts of five seconds each
    assert meter.pending == 20
    assert not spool_dir.exists() or list(spool_dir.iterdir()) == []


def test_shutdown_ends_within_its_grace_while_a_write_hangs_and_leaves_every_event_on_disk(
    monkeypatch: Any, spool_dir: Path, settings: Any, tmp_path: Path
) -> None:
    settings.BILLING_METER_BATCH_SIZE, settings.BILLING_SHUTDOWN_FLUSH_MIN_SECONDS = 5, 0.2
    never = threading.Event()
    monkeypatch.setattr(spool_module, "usage_events_store", lambda events, **_: never.wait())
    meter = UsageMeter()
    meter.journal = UsageJournal(tmp_path / "journal")
    for i in range(12):
        meter.push(event(f"req-{i}"))

    started = time.monotonic()
    assert asyncio.run(meter.drain(grace_seconds=0.2)) is False
    assert time.monotonic() - started < 2

    spooled = [usage_event_from_json(line).request_id for p in spool_dir.iterdir() for line in p.read_bytes().split()]
    journaled = [
        usage_event_from_json(line).request_id
        for p in (tmp_path / "journal").iterdir()
        for line in p.read_bytes().split()
    ]
    assert spooled == [f"req-{i}" for i in range(5, 12)]  # queued behind the hung batch
    assert {f"req-{i}" for i in range(5)} <= set(journaled)  # the hung batch: replayed after this process
    never.set()


@pytest.mark.django_db
def test_strings_and_counts_are_fitted_to_their_columns(owner: tuple[Tenant, ApiKey]) -> None:
    tenant, key = owner
    long = owned(owner, "long", public_model="m" * 300, error_code="e\x00" * 50, usage=Usage(input_tokens=2**40))
    meter = UsageMeter()
    meter.push(long)
    meter.flush_sync()
    record = UsageRecord.objects.get(request_id="long")
    assert (len(record.public_model), record.error_code, record.input_tokens) == (200, "e" * 50, 2**31 - 1)


@pytest.mark.django_db(transaction=True)
def test_the_writer_stores_every_batch_through_one_connection_on_sqlite(owner: tuple[Tenant, ApiKey]) -> None:
    """Closing SQLite's last connection checkpoints the WAL; the writer keeps
    its own open instead of paying that on every batch."""
    from django.db import connection
    from django.db.backends.signals import connection_created

    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL connections come from a pool and are given back after each batch")
    opened: list[object] = []
    connection_created.connect(lambda sender, connection, **_: opened.append(connection), weak=False, dispatch_uid="t")
    meter = UsageMeter()
    try:

        async def three_batches() -> None:
            for i in range(3):
                meter.push(owned(owner, f"batch-{i}"))
                assert await meter.flush() == 1

        asyncio.run(three_batches())
    finally:
        connection_created.disconnect(dispatch_uid="t")
        meter.writer_stop()

    assert stored_ids() == ["batch-0", "batch-1", "batch-2"]
    assert len(opened) == 1


@pytest.mark.django_db
def test_the_reconciliation_sees_usage_left_on_disk_until_a_replay_stores_it(
    owner: tuple[Tenant, ApiKey], monkeypatch: Any, spool_dir: Path, settings: Any, tmp_path: Path
) -> None:
    from billing.reconcile import books_reconcile

    settings.BILLING_JOURNAL_DIR, settings.BILLING_RECONCILE_UNSTORED_SECONDS = tmp_path / "journal", 0
    real_store = spool_module.usage_events_store
    monkeypatch.setattr(spool_module, "usage_events_store", lambda events, **_: (_ for _ in ()).throw(ValueError()))
    meter = UsageMeter()
    meter.push(owned(owner, "refused", cost_nanos=7_000))
    meter.flush_sync()
    (spool_dir / "usage-1-cut.bad").write_bytes(b'{"request_id": "half\n')

    report = books_reconcile()
    assert not report.ok
    assert [d for d in report.differences if d["check"] == "usage not in the books"] == [
        {
            "check": "usage not in the books",
            "file": next(spool_dir.glob("*.refused")).name,
            "events": 1,
            "cost_nanos": 7_000,
        }
    ]
    assert [d["lines"] for d in report.differences if d["check"] == "unreadable usage"] == [1]

    monkeypatch.setattr(spool_module, "usage_events_store", real_store)
    assert usage_spool_replay() == 1
    (spool_dir / "usage-1-cut.bad").unlink()  # a person has looked at it
    assert books_reconcile().ok
