"""The first start of `make run`: providers from the environment, a demo key once."""

from io import StringIO

import pytest
from django.core.management import call_command

from accounts.keys import key_digest
from accounts.models import ApiKey
from proxy.models import Provider, Route

pytestmark = pytest.mark.django_db


def bootstrap() -> str:
    out = StringIO()
    call_command("gateway_bootstrap", stdout=out)
    return out.getvalue()


def test_the_first_start_creates_routes_for_providers_in_the_environment_and_prints_a_demo_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-openai")
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-real-deepseek")
    first = bootstrap()
    assert set(Provider.objects.values_list("name", "api_key_env")) >= {
        ("openai", "OPENAI_API_KEY"), ("deepseek", "DEEPSEEK_API_KEY"),
    }  # fmt: skip
    assert {"openai/*", "gpt-*", "deepseek/*"} <= set(Route.objects.values_list("model", flat=True))
    [printed] = [line.strip() for line in first.splitlines() if line.strip().startswith("sk-gw-")]
    assert ApiKey.objects.filter(digest=key_digest(printed), tenant__slug="demo").exists()
    assert "sk-real-openai" not in first


def test_a_second_start_changes_nothing_and_shows_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-openai")
    bootstrap()
    second = bootstrap()
    assert "sk-gw-" not in second and "key_create demo" in second
    assert ApiKey.objects.filter(tenant__slug="demo").count() == 1
