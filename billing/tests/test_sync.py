"""The price sync from LiteLLM's pricing file, run on the shipped fixtures
(never the network).

LiteLLM rates are USD per token; ours are USD per million tokens, so every
expected value below is the file's figure x 10^6, worked out by hand.
"""

import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError, OutputWrapper

from billing import price_file, sync
from billing.management.commands.prices_sync import ProgressBar
from billing.models import Price, PriceSyncRun
from billing.price_file import PriceSyncError
from billing.services import price_set
from billing.sync import prices_sync
from billing.tasks import prices_sync_task

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SAMPLE = FIXTURES / "litellm_sample.json"
MALFORMED = FIXTURES / "litellm_malformed.json"

SYNCED = {
    "gpt-4o",
    "gpt-4o-mini",
    "o3-mini",
    "o1-pro",
    "gpt-3.5-turbo-instruct",
    "azure/gpt-4o",
    "claude-sonnet-4-5",
    "claude-opus-4-1",
    "claude-3-5-haiku-20241022",
    "openrouter/anthropic/claude-3.5-sonnet",
    "gemini/gemini-2.5-pro",
    "gemini/gemini-1.5-pro",
    "text-embedding-3-small",
    "together_ai/meta-llama/Llama-3.3-70B-Instruct-Turbo",
    "ollama/llama3",
    "whisper-1",  # per second of audio (billing.media_pricing)
}
SKIPPED = {
    "dall-e-3": "priced per pixel with no size in its name: set its price per image by hand",
    "broken/missing-output-cost": "missing output_cost_per_token",
    "broken/negative-price": "input_cost_per_token is negative: -0.000001",
    "broken/string-price": 'input_cost_per_token is not a number: "free"',
    "broken/absurd-price": "output_cost_per_token is absurd: $1000000 per million tokens (more than $10000)",
    "broken/fractional-max-output": "max_output_tokens is not an integer: 4096.5",
}


def sample() -> dict[str, Any]:
    return json.loads(SAMPLE.read_text(), parse_float=Decimal)


def write_prices(tmp_path: Path, document: Any) -> Path:
    """A pricing file in tmp_path. A Decimal goes out through float, whose
    shortest repr ("8e-06") reads back as the same Decimal: exact for rates
    written as LiteLLM writes them."""
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(document, default=float))
    return path


def current(model: str) -> Price:
    return Price.objects.filter(model=model, provider=None).order_by("-effective_from", "-id").first()


def latest_run() -> PriceSyncRun:
    return PriceSyncRun.objects.order_by("-id").first()


# Conversions: per token to per million, exact


@pytest.mark.django_db
def test_openai_per_token_prices_become_exact_usd_per_million() -> None:
    prices_sync(str(SAMPLE))

    gpt_4o = current("gpt-4o")
    assert gpt_4o.input_usd_per_mtok == Decimal("2.5")
    assert gpt_4o.output_usd_per_mtok == Decimal("10")
    assert gpt_4o.cached_input_usd_per_mtok == Decimal("1.25")
    assert gpt_4o.max_output_tokens == 16384
    assert (gpt_4o.provider, gpt_4o.source) == (None, Price.Source.SYNC)
    assert gpt_4o.cache_write_5m_usd_per_mtok is None and gpt_4o.long_context_threshold is None
    mini = current("gpt-4o-mini")
    assert (mini.input_usd_per_mtok, mini.output_usd_per_mtok, mini.cached_input_usd_per_mtok) == (
        Decimal("0.15"),
        Decimal("0.6"),
        Decimal("0.075"),
    )
    assert type(mini.input_usd_per_mtok) is Decimal


@pytest.mark.django_db
def test_a_reasoning_rate_is_synced_and_its_absence_left_empty() -> None:
    prices_sync(str(SAMPLE))

    o3_mini = current("o3-mini")
    assert (o3_mini.input_usd_per_mtok, o3_mini.output_usd_per_mtok) == (Decimal("1.1"), Decimal("4.4"))
    assert o3_mini.reasoning_usd_per_mtok == Decimal("4.4")
    assert o3_mini.max_output_tokens == 100_000
    assert current("gpt-4o").reasoning_usd_per_mtok is None


@pytest.mark.django_db
def test_anthropic_cache_writes_map_to_the_5_minute_and_1_hour_rates() -> None:
    prices_sync(str(SAMPLE))

    haiku = current("claude-3-5-haiku-20241022")
    assert haiku.input_usd_per_mtok == Decimal("0.8")
    assert haiku.output_usd_per_mtok == Decimal("4")
    assert haiku.cached_input_usd_per_mtok == Decimal("0.08")
    assert haiku.cache_write_5m_usd_per_mtok == Decimal("1")
    assert haiku.cache_write_1h_usd_per_mtok == Decimal("1.6")
    opus = current("claude-opus-4-1")
    assert (opus.cache_write_5m_usd_per_mtok, opus.cache_write_1h_usd_per_mtok) == (Decimal("18.75"), Decimal("30"))


@pytest.mark.django_db
def test_a_200k_long_context_tier_is_stored_with_its_threshold_and_every_rate() -> None:
    prices_sync(str(SAMPLE))

    sonnet = current("claude-sonnet-4-5")
    assert (sonnet.input_usd_per_mtok, sonnet.output_usd_per_mtok) == (Decimal("3"), Decimal("15"))
    assert sonnet.cached_input_usd_per_mtok == Decimal("0.3")
    assert sonnet.cache_write_5m_usd_per_mtok == Decimal("3.75")
    assert sonnet.cache_write_1h_usd_per_mtok == Decimal("6")
    assert sonnet.long_context_threshold == 200_000
    assert sonnet.long_input_usd_per_mtok == Decimal("6")
    assert sonnet.long_output_usd_per_mtok == Decimal("22.5")
    assert sonnet.long_cached_input_usd_per_mtok == Decimal("0.6")
    assert sonnet.long_cache_write_5m_usd_per_mtok == Decimal("7.5")
    assert sonnet.long_cache_write_1h_usd_per_mtok == Decimal("12")
    assert sonnet.max_output_tokens == 64_000


@pytest.mark.django_db
def test_the_long_context_threshold_is_read_from_the_key_name() -> None:
    prices_sync(str(SAMPLE))

    gemini_15 = current("gemini/gemini-1.5-pro")
    assert gemini_15.long_context_threshold == 128_000
    assert (gemini_15.long_input_usd_per_mtok, gemini_15.long_output_usd_per_mtok) == (Decimal("7"), Decimal("21"))
    # input_cost_per_character_above_128k_tokens is per character: not a token rate, not read.
    assert gemini_15.long_cached_input_usd_per_mtok is None
    gemini_25 = current("gemini/gemini-2.5-pro")
    assert gemini_25.long_context_threshold == 200_000
    # "..._above_200k_tokens_priority" is the priority service tier's rate, not the long-context one.
    assert gemini_25.long_input_usd_per_mtok == Decimal("2.5")
    assert gemini_25.cached_input_usd_per_mtok == Decimal("0.3125")
    assert gemini_25.long_cached_input_usd_per_mtok == Decimal("0.625")


@pytest.mark.django_db
def test_embedding_completion_responses_and_modeless_entries_are_synced_and_zero_is_a_price() -> None:
    prices_sync(str(SAMPLE))

    embedding = current("text-embedding-3-small")
    assert (embedding.input_usd_per_mtok, embedding.output_usd_per_mtok) == (Decimal("0.02"), Decimal("0"))
    assert embedding.max_output_tokens is None
    assert current("gpt-3.5-turbo-instruct").output_usd_per_mtok == Decimal("2")
    assert current("o1-pro").output_usd_per_mtok == Decimal("600")
    assert current("together_ai/meta-llama/Llama-3.3-70B-Instruct-Turbo").input_usd_per_mtok == Decimal("0.88")
    llama = current("ollama/llama3")
    assert (llama.input_usd_per_mtok, llama.output_usd_per_mtok) == (Decimal("0"), Decimal("0"))


@pytest.mark.django_db
def test_a_rate_finer_than_a_nanodollar_per_million_is_rounded_half_up(tmp_path: Path) -> None:
    # 1.0000000005e-06 per token = 1.0000000005 per million: half a nano, rounded up (half-even would go down).
    # 3.33333333349e-07 = 0.333333333349 per million: under half a nano, rounded down.
    path = tmp_path / "prices.json"
    path.write_text('{"odd": {"input_cost_per_token": 1.0000000005e-06, "output_cost_per_token": 3.33333333349e-07}}')

    result = prices_sync(str(path))

    assert result.added == ["odd"]
    odd = current("odd")
    assert odd.input_usd_per_mtok == Decimal("1.000000001")
    assert odd.output_usd_per_mtok == Decimal("0.333333333")


@pytest.mark.django_db
def test_ten_thousand_dollars_per_million_is_the_most_a_rate_may_be(tmp_path: Path) -> None:
    path = write_prices(
        tmp_path,
        {
            "dearest": {"input_cost_per_token": Decimal("0.01"), "output_cost_per_token": Decimal("0.01")},
            "too-dear": {"input_cost_per_token": Decimal("0.01"), "output_cost_per_token": Decimal("0.010000001")},
        },
    )

    result = prices_sync(str(path))

    assert result.added == ["dearest"]
    assert current("dearest").output_usd_per_mtok == Decimal("10000")
    assert result.skipped == {
        "too-dear": "output_cost_per_token is absurd: $10000.001 per million tokens (more than $10000)"
    }


# What a run reports


@pytest.mark.django_db
def test_a_first_run_adds_every_good_entry_and_skips_each_bad_one_with_its_reason() -> None:
    before = Price.objects.count()

    result = prices_sync(str(SAMPLE))

    assert result.counts() == {"added": 16, "changed": 0, "unchanged": 0, "skipped": 6}
    assert set(result.added) == SYNCED
    assert result.skipped == SKIPPED
    assert Price.objects.count() == before + 16
    assert not Price.objects.filter(model__in=SKIPPED).exists()


@pytest.mark.django_db
def test_sample_spec_is_documentation_not_a_model() -> None:
    result = prices_sync(str(SAMPLE))

    assert "sample_spec" not in result.skipped and "sample_spec" not in result.added
    assert not Price.objects.filter(model="sample_spec").exists()


@pytest.mark.django_db
def test_other_malformed_entries_are_skipped_with_a_reason_and_the_rest_applied(tmp_path: Path) -> None:
    good = {"input_cost_per_token": Decimal("1e-06"), "output_cost_per_token": Decimal("2e-06")}
    path = write_prices(
        tmp_path,
        {
            "good": good,
            "not-an-object": [1, 2],
            "null-input": {**good, "input_cost_per_token": None},
            "boolean-price": {**good, "output_cost_per_token": True},
            "string-max-output": {**good, "max_output_tokens": "8192"},
            "list-mode": {**good, "mode": ["chat"]},
            "zero-max-output": {**good, "max_output_tokens": 0},
            "two-thresholds": {
                **good,
                "input_cost_per_token_above_128k_tokens": Decimal("2e-06"),
                "input_cost_per_token_above_256k_tokens": Decimal("3e-06"),
            },
            "bad-long-rate": {**good, "output_cost_per_token_above_200k_tokens": "lots"},
            "x" * 201: good,
        },
    )

    result = prices_sync(str(path))

    assert result.added == ["good"]
    assert result.skipped == {
        "not-an-object": "entry is not an object",
        "null-input": "missing input_cost_per_token",
        "boolean-price": "output_cost_per_token is not a number: true",
        "string-max-output": 'max_output_tokens is not an integer: "8192"',
        "list-mode": "mode ['chat'] is not token-priced",
        "zero-max-output": "max_output_tokens out of range: 0",
        "two-thresholds": "several long-context thresholds (128k, 256k): set this price by hand",
        "bad-long-rate": 'output_cost_per_token_above_200k_tokens is not a number: "lots"',
        "x" * 201: "model name is longer than 200 characters",
    }


@pytest.mark.django_db
def test_nan_and_infinity_are_not_prices(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(
        '{"nan": {"input_cost_per_token": NaN, "output_cost_per_token": 1e-06},'
        ' "inf": {"input_cost_per_token": 1e-06, "output_cost_per_token": Infinity}}'
    )

    result = prices_sync(str(path))

    assert result.skipped == {
        "nan": "input_cost_per_token is not a finite number: NaN",
        "inf": "output_cost_per_token is not a finite number: Infinity",
    }
    assert not Price.objects.filter(model__in=["nan", "inf"]).exists()


@pytest.mark.django_db
def test_every_run_is_recorded_with_its_counts_and_skip_reasons() -> None:
    result = prices_sync(str(SAMPLE))

    run = latest_run()
    assert result.run == run
    assert run.ok is True and run.error == ""
    assert run.source == str(SAMPLE)
    assert (run.added, run.changed, run.unchanged, run.skipped) == (16, 0, 0, 6)
    assert run.details == {"skipped": SKIPPED}


# Idempotence, history and hand-set prices


@pytest.mark.django_db
def test_a_second_run_changes_nothing() -> None:
    prices_sync(str(SAMPLE))
    rows = Price.objects.count()

    result = prices_sync(str(SAMPLE))

    assert result.counts() == {"added": 0, "changed": 0, "unchanged": 16, "skipped": 6}
    assert set(result.unchanged) == SYNCED
    assert Price.objects.count() == rows
    assert (latest_run().unchanged, latest_run().added) == (16, 0)


@pytest.mark.django_db
def test_a_changed_price_adds_a_new_row_and_keeps_the_old_one(tmp_path: Path) -> None:
    prices_sync(str(SAMPLE))
    old = current("gpt-4o")
    document = sample()
    document["gpt-4o"]["output_cost_per_token"] = Decimal("8e-06")
    document["claude-opus-4-1"]["max_output_tokens"] = 64000

    result = prices_sync(str(write_prices(tmp_path, document)))

    assert sorted(result.changed) == ["claude-opus-4-1", "gpt-4o"]
    assert result.counts() == {"added": 0, "changed": 2, "unchanged": 14, "skipped": 6}
    history = list(Price.objects.filter(model="gpt-4o").order_by("effective_from"))
    assert [p.output_usd_per_mtok for p in history] == [Decimal("10"), Decimal("8")]
    assert history[0].pk == old.pk and history[0].output_usd_per_mtok == Decimal("10")
    assert history[1].effective_from > old.effective_from
    assert history[1].source == Price.Source.SYNC
    assert current("claude-opus-4-1").max_output_tokens == 64000


@pytest.mark.django_db
def test_a_rate_dropped_from_the_file_is_a_change() -> None:
    price_set(
        model="gpt-4o",
        input_usd=Decimal("2.5"),
        output_usd=Decimal("10"),
        cached_input_usd=Decimal("1.25"),
        max_output_tokens=16384,
        reasoning_usd_per_mtok=Decimal("10"),
        source=Price.Source.SYNC,
    )

    result = prices_sync(str(SAMPLE))

    assert "gpt-4o" in result.changed
    assert current("gpt-4o").reasoning_usd_per_mtok is None


@pytest.mark.django_db
def test_a_hand_set_price_is_left_alone_and_reported_skipped() -> None:
    hand_set, _ = price_set(model="gpt-4o", input_usd=Decimal("2"), output_usd=Decimal("9"))

    result = prices_sync(str(SAMPLE))

    assert result.skipped["gpt-4o"] == "hand-set price"
    assert "gpt-4o" not in result.added + result.changed + result.unchanged
    assert list(Price.objects.filter(model="gpt-4o")) == [hand_set]
    assert current("gpt-4o").output_usd_per_mtok == Decimal("9")
    assert latest_run().details["skipped"]["gpt-4o"] == "hand-set price"


@pytest.mark.django_db
def test_a_price_set_by_hand_after_a_sync_wins_over_the_next_sync() -> None:
    prices_sync(str(SAMPLE))
    hand_set, _ = price_set(model="claude-sonnet-4-5", input_usd=Decimal("2"), output_usd=Decimal("12"))

    result = prices_sync(str(SAMPLE))

    assert result.skipped["claude-sonnet-4-5"] == "hand-set price"
    assert current("claude-sonnet-4-5") == hand_set
    assert Price.objects.filter(model="claude-sonnet-4-5").count() == 2


# Failures: the whole run or nothing


@pytest.mark.django_db
def test_a_truncated_file_fails_the_run_changes_nothing_and_is_recorded() -> None:
    before = Price.objects.count()

    with pytest.raises(PriceSyncError, match="not valid JSON"):
        prices_sync(str(MALFORMED))

    assert Price.objects.count() == before
    assert not Price.objects.filter(model="gpt-4o").exists()
    run = latest_run()
    assert run.ok is False
    assert run.source == str(MALFORMED)
    assert run.error.startswith("the pricing file is not valid JSON: ")
    assert (run.added, run.changed, run.unchanged, run.skipped) == (0, 0, 0, 0)


@pytest.mark.django_db
def test_a_file_whose_top_level_is_not_an_object_fails_the_run(tmp_path: Path) -> None:
    path = write_prices(tmp_path, [{"gpt-4o": {"input_cost_per_token": 1, "output_cost_per_token": 1}}])

    with pytest.raises(PriceSyncError, match="must be a JSON object of models, not a list"):
        prices_sync(str(path))

    assert latest_run().ok is False


@pytest.mark.django_db
def test_a_missing_file_fails_the_run_with_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.json"

    with pytest.raises(PriceSyncError, match=f"cannot read {missing}: .*No such file"):
        prices_sync(str(missing))

    assert latest_run().ok is False
    assert "No such file" in latest_run().error


@pytest.mark.django_db
def test_an_error_while_writing_rolls_back_every_price_of_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def failing_price_set(**kwargs: Any) -> tuple[Price, bool]:
        calls.append(kwargs["model"])
        if len(calls) == 5:
            raise RuntimeError("database went away")
        return price_set(**kwargs)

    monkeypatch.setattr(sync, "price_set", failing_price_set)
    before = Price.objects.count()

    with pytest.raises(RuntimeError, match="database went away"):
        prices_sync(str(SAMPLE))

    assert len(calls) == 5  # four prices were written before the failure...
    assert Price.objects.count() == before  # ...and rolled back with it
    run = latest_run()
    assert (run.ok, run.error, run.added) == (False, "database went away", 0)


# Sources: paths, file:// URLs, http(s) URLs


@pytest.mark.django_db
def test_a_file_url_is_read_like_a_path() -> None:
    result = prices_sync(SAMPLE.as_uri())

    assert result.counts()["added"] == 16
    assert latest_run().source == SAMPLE.as_uri()


@pytest.mark.django_db
def test_an_http_url_is_fetched_with_a_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    fetched: list[tuple[str, float]] = []

    def fake_urlopen(url: str, timeout: float) -> io.BytesIO:
        fetched.append((url, timeout))
        return io.BytesIO(SAMPLE.read_bytes())

    monkeypatch.setattr(price_file.urllib.request, "urlopen", fake_urlopen)

    result = prices_sync("https://prices.example/model_prices_and_context_window.json")

    assert fetched == [
        ("https://prices.example/model_prices_and_context_window.json", price_file.FETCH_TIMEOUT_SECONDS)
    ]
    assert result.counts()["added"] == 16


@pytest.mark.django_db
def test_an_unknown_url_scheme_fails_the_run() -> None:
    with pytest.raises(PriceSyncError, match="use an http"):
        prices_sync("ftp://prices.example/prices.json")


@pytest.mark.django_db
def test_without_a_url_the_setting_is_used(settings: Any) -> None:
    settings.BILLING_PRICES_URL = str(SAMPLE)

    result = prices_sync()

    assert result.source == str(SAMPLE)
    assert result.counts()["added"] == 16


# The command and the beat task


def run_command(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("prices_sync", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.mark.django_db
def test_the_command_prints_a_summary_line() -> None:
    out, err = run_command("--file", str(SAMPLE))

    assert out == "added 16, changed 0, unchanged 0, skipped 6 (see --verbosity 2 for reasons)\n"
    assert err == ""  # no progress bar outside a terminal
    assert current("gpt-4o").input_usd_per_mtok == Decimal("2.5")


@pytest.mark.django_db
def test_the_command_lists_skipped_models_and_reasons_at_verbosity_2() -> None:
    out, _ = run_command("--file", str(SAMPLE), "--verbosity", "2")

    lines = out.splitlines()
    assert lines[0] == "added 16, changed 0, unchanged 0, skipped 6"
    assert lines[1:] == [f"skipped {model}: {reason}" for model, reason in SKIPPED.items()]


@pytest.mark.django_db
def test_the_command_reads_a_url() -> None:
    out, _ = run_command("--url", SAMPLE.as_uri())

    assert out.startswith("added 16, ")


@pytest.mark.django_db
def test_the_command_fails_on_a_malformed_file_and_changes_nothing() -> None:
    before = Price.objects.count()

    with pytest.raises(CommandError, match="price sync failed, nothing changed: the pricing file is not valid JSON"):
        run_command("--file", str(MALFORMED))

    assert Price.objects.count() == before
    assert latest_run().ok is False


def test_the_command_takes_a_url_or_a_file_not_both() -> None:
    with pytest.raises(CommandError, match="not allowed with argument"):
        run_command("--file", str(SAMPLE), "--url", SAMPLE.as_uri())


@pytest.mark.django_db
def test_the_beat_task_syncs_from_the_setting_and_returns_the_counts(settings: Any) -> None:
    settings.BILLING_PRICES_URL = str(SAMPLE)

    counts = prices_sync_task()

    assert counts == {"added": 16, "changed": 0, "unchanged": 0, "skipped": 6}
    assert current("claude-sonnet-4-5").cache_write_5m_usd_per_mtok == Decimal("3.75")
    assert prices_sync_task() == {"added": 0, "changed": 0, "unchanged": 16, "skipped": 6}


# The progress bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_bar_draws_on_a_terminal_and_ends_the_line() -> None:
    stream = Terminal()
    bar = ProgressBar(OutputWrapper(stream))

    for done in range(1, 61):
        bar(done, 60)

    drawn = stream.getvalue()
    assert drawn.count("\r") == 31  # once per width of the 30-wide bar (0 to 30), not once per model
    assert drawn.startswith("\r[" + "-" * 30 + "] 1/60 models\r[#" + "-" * 29 + "] 2/60 models")
    assert drawn.endswith("\r[" + "#" * 30 + "] 60/60 models\n")


def test_the_progress_bar_is_silent_outside_a_terminal_or_when_disabled() -> None:
    pipe, terminal = io.StringIO(), Terminal()

    ProgressBar(OutputWrapper(pipe))(1, 1)
    ProgressBar(OutputWrapper(terminal), enabled=False)(1, 1)

    assert pipe.getvalue() == "" and terminal.getvalue() == ""


@pytest.mark.django_db
def test_a_sync_moves_the_config_version_once_not_once_per_price() -> None:
    from accounts.models import ConfigVersion
    from accounts.snapshots import config_version_read

    before = config_version_read()
    result = prices_sync(str(SAMPLE))
    assert result.counts()["added"] > 1
    assert ConfigVersion.objects.get(pk=1).version == before + 1


def test_the_audio_rates_of_a_realtime_model_are_synced() -> None:
    entry = {
        "mode": "chat",
        "input_cost_per_token": Decimal("4e-06"),
        "output_cost_per_token": Decimal("1.6e-05"),
        "cache_read_input_token_cost": Decimal("4e-07"),
        "input_cost_per_audio_token": Decimal("3.2e-05"),
        "output_cost_per_audio_token": Decimal("6.4e-05"),
    }
    synced = price_file.entry_convert("gpt-realtime", entry)
    assert synced.optional["audio_input_usd_per_mtok"] == Decimal("32")
    assert synced.optional["audio_output_usd_per_mtok"] == Decimal("64")
