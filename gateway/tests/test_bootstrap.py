"""The first start of `make run`: providers from the environment, a demo key once."""

import shutil
import subprocess
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from accounts.keys import key_digest
from accounts.models import ApiKey
from proxy.models import Provider, Route

pytestmark = pytest.mark.django_db


def bootstrap(*args: str) -> str:
    out = StringIO()
    call_command("gateway_bootstrap", *args, stdout=out)
    return out.getvalue()


def test_the_first_start_creates_routes_for_providers_in_the_environment_and_prints_a_demo_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-openai")
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-real-deepseek")
    first = bootstrap()
    assert set(Provider.objects.values_list("name", "api_key_env")) >= {
        ("openai", "OPENAI_API_KEY"),
        ("deepseek", "DEEPSEEK_API_KEY"),
    }
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


def test_the_demo_hint_names_the_port_the_gateway_is_started_on() -> None:
    out = bootstrap("--host", "0.0.0.0", "--port", "9000")
    assert "OPENAI_BASE_URL=http://127.0.0.1:9000/v1 " in out
    assert ":8000" not in out


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_run_on_another_port_gives_bootstrap_the_same_host_and_port_as_serve() -> None:
    plan = subprocess.run(
        ["make", "-n", "run", "PORT=9000", "HOST=0.0.0.0"],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    [line] = [line for line in plan.splitlines() if "gateway_bootstrap" in line]
    assert line.endswith("gateway_bootstrap --host 0.0.0.0 --port 9000")
