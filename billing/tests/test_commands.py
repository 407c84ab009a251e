"""price_set, as an operator runs it: exact amounts, history kept, bad amounts refused."""

from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from billing.models import Price
from gateway.management.commands import price_set as price_set_command
from proxy.services import provider_upsert

MODEL = "cmd-test-model"  # not one of the session's priced models


def run(*args: str) -> str:
    """Run price_set with string arguments, as from the shell; returns stdout."""
    out = StringIO()
    call_command("price_set", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def prices(model: str = MODEL) -> list[tuple[Decimal, Decimal, Decimal | None]]:
    rows = Price.objects.filter(model=model).order_by("created_at", "id")
    return [(p.input_usd_per_mtok, p.output_usd_per_mtok, p.cached_input_usd_per_mtok) for p in rows]


@pytest.mark.django_db
def test_price_set_adds_a_price_with_the_exact_amounts_given() -> None:
    before = timezone.now()
    out = run(MODEL, "--input", "0.15", "--output", "0.60", "--cached-input", "0.075")

    assert out == f"set price of {MODEL}\n"
    price = Price.objects.get(model=MODEL)
    assert price.input_usd_per_mtok == Decimal("0.15")
    assert price.output_usd_per_mtok == Decimal("0.6")
    assert price.cached_input_usd_per_mtok == Decimal("0.075")
    assert all(type(v) is Decimal for v in prices()[0])
    assert (price.provider, price.source) == (None, Price.Source.MANUAL)
    assert before <= price.effective_from <= timezone.now()


@pytest.mark.django_db
def test_amounts_with_nine_decimal_places_are_stored_to_the_nano() -> None:
    run(MODEL, "--input", "0.000000001", "--output", "123.456789123")

    assert prices() == [(Decimal("0.000000001"), Decimal("123.456789123"), None)]


@pytest.mark.django_db
def test_without_a_cached_input_price_none_is_stored() -> None:
    run(MODEL, "--input", "1", "--output", "2")

    assert prices() == [(Decimal("1"), Decimal("2"), None)]


@pytest.mark.django_db
def test_setting_the_same_price_again_reports_unchanged_and_adds_no_row() -> None:
    run(MODEL, "--input", "0.15", "--output", "0.60", "--cached-input", "0.075")
    first = Price.objects.get(model=MODEL)

    out = run(MODEL, "--input", "0.15", "--output", "0.60", "--cached-input", "0.075")

    assert out == f"unchanged price of {MODEL}\n"
    assert list(Price.objects.filter(model=MODEL)) == [first]


@pytest.mark.django_db
def test_the_same_amount_written_differently_is_unchanged() -> None:
    run(MODEL, "--input", "0.15", "--output", "0.6")

    out = run(MODEL, "--input", "0.150", "--output", "0.600000000")

    assert out == f"unchanged price of {MODEL}\n"
    assert Price.objects.filter(model=MODEL).count() == 1


@pytest.mark.django_db
def test_a_new_price_adds_a_row_and_keeps_the_old_one_untouched() -> None:
    run(MODEL, "--input", "0.15", "--output", "0.60")
    old = Price.objects.get(model=MODEL)
    old_values = (old.input_usd_per_mtok, old.output_usd_per_mtok, old.cached_input_usd_per_mtok, old.effective_from)

    out = run(MODEL, "--input", "0.20", "--output", "0.60")

    assert out == f"set price of {MODEL}\n"
    assert prices() == [
        (Decimal("0.15"), Decimal("0.6"), None),
        (Decimal("0.2"), Decimal("0.6"), None),
    ]
    old.refresh_from_db()
    assert (
        old.input_usd_per_mtok,
        old.output_usd_per_mtok,
        old.cached_input_usd_per_mtok,
        old.effective_from,
    ) == old_values
    newest = Price.objects.filter(model=MODEL).effective_at(timezone.now()).order_by("-effective_from").first()
    assert newest is not None and newest.input_usd_per_mtok == Decimal("0.2")
    assert newest.effective_from >= old.effective_from


@pytest.mark.django_db
def test_adding_a_cached_input_price_counts_as_a_change() -> None:
    run(MODEL, "--input", "1", "--output", "2")

    out = run(MODEL, "--input", "1", "--output", "2", "--cached-input", "1")

    assert out == f"set price of {MODEL}\n"
    assert prices() == [(Decimal("1"), Decimal("2"), None), (Decimal("1"), Decimal("2"), Decimal("1"))]


@pytest.mark.django_db
def test_a_price_for_one_provider_is_kept_apart_from_the_any_provider_price() -> None:
    provider, _ = provider_upsert(name="cmd-test-provider", kind="openai", base_url="http://127.0.0.1:9/v1")
    run(MODEL, "--input", "1", "--output", "2")

    out = run(MODEL, "--input", "1", "--output", "2", "--provider", "cmd-test-provider")

    assert out == f"set price of {MODEL}\n"  # not "unchanged": the provider's own price is new
    assert Price.objects.get(model=MODEL, provider=provider).input_usd_per_mtok == Decimal("1")
    assert Price.objects.filter(model=MODEL, provider=None).count() == 1


@pytest.mark.django_db
def test_an_unknown_provider_is_refused() -> None:
    with pytest.raises(CommandError, match=r"^no provider 'nope'$"):
        run(MODEL, "--input", "1", "--output", "2", "--provider", "nope")

    assert not Price.objects.filter(model=MODEL).exists()


@pytest.mark.django_db
@pytest.mark.parametrize("option", ["--input", "--output", "--cached-input"])
@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("-0.15", r"invalid amount '-0.15': must be a finite number >= 0"),
        ("abc", r"invalid amount 'abc': expected a number of USD such as 0.15"),
        ("0,15", r"invalid amount '0,15': expected a number of USD"),
        ("NaN", r"invalid amount 'NaN': must be a finite number >= 0"),
        ("Infinity", r"invalid amount 'Infinity': must be a finite number >= 0"),
    ],
)
def test_a_negative_or_non_numeric_amount_is_refused_and_nothing_is_stored(
    option: str, amount: str, message: str
) -> None:
    args = {"--input": "1", "--output": "2", "--cached-input": "0.5", option: amount}

    with pytest.raises(CommandError, match=message):
        run(MODEL, *(f"{name}={value}" for name, value in args.items()))

    assert not Price.objects.filter(model=MODEL).exists()


@pytest.mark.django_db
def test_an_amount_finer_than_one_nano_dollar_is_refused() -> None:
    with pytest.raises(CommandError, match=r"^0\.1234567891 USD is finer than one nano-dollar$"):
        run(MODEL, "--input", "1", "--output", "0.1234567891")
    with pytest.raises(CommandError, match=r"USD is finer than one nano-dollar$"):
        run(MODEL, "--input", "1", "--output", "2", "--cached-input", "0.0000000001")

    assert not Price.objects.filter(model=MODEL).exists()


@pytest.mark.django_db
def test_input_and_output_prices_are_required() -> None:
    with pytest.raises(CommandError, match="--input and --output are required"):
        run(MODEL, "--input", "1")


def test_a_non_numeric_amount_on_the_real_command_line_is_a_usage_error_not_a_traceback(capsys: Any) -> None:
    command = price_set_command.Command()

    with pytest.raises(SystemExit) as exit_info:
        command.run_from_argv(["manage.py", "price_set", MODEL, "--input", "abc", "--output", "1"])

    assert exit_info.value.code != 0
    assert "invalid amount 'abc'" in capsys.readouterr().err
