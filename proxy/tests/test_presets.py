"""Provider kinds: their default URLs and credentials, the protocol each
speaks, and which client APIs pass through to them untranslated."""

import io

import orjson
import pytest
from django.core.management import CommandError, call_command

from gateway.kernel.context import ProviderConfig, RouteTarget
from proxy.apis.chat import chat_call
from proxy.apis.messages import messages_call
from proxy.apis.registry import spec_for
from proxy.apis.responses import responses_call
from proxy.dialects import Dialect
from proxy.exchange import exchange_for, native_dialects
from proxy.models import Provider
from proxy.presets import PRESETS, preset_for


def target(kind: str, base_url: str = "https://up.test/v1", model: str = "up-model") -> RouteTarget:
    return RouteTarget("public", ProviderConfig("p", kind, base_url, api_key="sk-secret"), model, None)


def test_every_preset_is_a_provider_kind() -> None:
    assert Provider.Kind.values == [preset.name for preset in PRESETS]


def test_an_unknown_kind_speaks_plain_openai() -> None:
    assert preset_for("something-new").protocol == "openai"


@pytest.mark.django_db
def test_provider_create_takes_the_kinds_default_base_url() -> None:
    call_command(
        "provider_create", "claude", "--kind", "anthropic", "--api-key-env", "ANTHROPIC_API_KEY", stdout=io.StringIO()
    )
    provider = Provider.objects.get(name="claude")
    assert (provider.kind, provider.base_url) == ("anthropic", "https://api.anthropic.com/v1")


@pytest.mark.django_db
def test_provider_create_needs_a_base_url_where_the_kind_has_none() -> None:
    with pytest.raises(CommandError, match="--base-url is required"):
        call_command("provider_create", "az", "--kind", "azure", stdout=io.StringIO())


@pytest.mark.parametrize(
    ("kind", "native"),
    [
        ("openai", {"chat.completions", "embeddings", "completions", "responses"}),
        ("anthropic", {"messages", "messages.count_tokens"}),
        ("azure", {"chat.completions", "embeddings", "completions"}),
        ("deepseek", {"chat.completions", "embeddings"}),
        ("openai-compatible", {"chat.completions", "embeddings", "completions"}),
    ],
)
def test_which_client_apis_each_kind_serves_natively(kind: str, native: set[str]) -> None:
    assert {d.value for d in native_dialects(kind)} == native


def test_azure_puts_the_deployment_in_the_path_and_the_key_in_api_key() -> None:
    call = chat_call(orjson.dumps({"model": "public", "messages": [{"role": "user", "content": "hi"}]}))
    exchange = exchange_for(call, target("azure", "https://res.openai.azure.com/openai", "my-deployment"))
    assert exchange.request.url == (
        "https://res.openai.azure.com/openai/deployments/my-deployment/chat/completions?api-version=2024-10-21"
    )
    assert exchange.request.headers["api-key"] == "sk-secret"
    assert "Authorization" not in exchange.request.headers


def test_an_azure_base_url_may_carry_its_own_api_version() -> None:
    call = chat_call(orjson.dumps({"model": "public", "messages": [{"role": "user", "content": "hi"}]}))
    exchange = exchange_for(call, target("azure", "https://res.openai.azure.com/openai?api-version=2025-01-01", "d"))
    assert exchange.request.url.endswith("/deployments/d/chat/completions?api-version=2025-01-01")


def test_a_native_call_passes_its_body_through_with_only_the_model_replaced() -> None:
    body = {"model": "public", "input": "hi", "store": True, "previous_response_id": "resp_1"}
    exchange = exchange_for(responses_call(orjson.dumps(body)), target("openai"))
    assert not exchange.translated
    assert exchange.request.url == "https://up.test/v1/responses"
    assert orjson.loads(exchange.request.body) == {**body, "model": "up-model"}


def test_a_message_to_an_anthropic_provider_keeps_the_clients_version_beta_and_query() -> None:
    body = {"model": "public", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"anthropic-version": "2023-06-01", "anthropic-beta": "context-management-2025-06-27"}
    exchange = exchange_for(messages_call(orjson.dumps(body), headers, "beta=true"), target("anthropic"))
    assert exchange.request.url == "https://up.test/v1/messages?beta=true"
    assert exchange.request.headers["x-api-key"] == "sk-secret"
    assert exchange.request.headers["anthropic-beta"] == "context-management-2025-06-27"


def test_a_call_that_cannot_be_expressed_upstream_is_the_clients_400() -> None:
    from gateway.kernel.errors import GatewayError

    body = {"model": "public", "input": "hi", "previous_response_id": "resp_1"}
    with pytest.raises(GatewayError) as caught:
        exchange_for(responses_call(orjson.dumps(body)), target("deepseek"))
    assert (caught.value.status, caught.value.param) == (400, "previous_response_id")


def test_embeddings_are_refused_for_a_provider_without_them() -> None:
    from gateway.kernel.errors import GatewayError
    from proxy.apis.embeddings import embeddings_call

    with pytest.raises(GatewayError) as caught:
        exchange_for(embeddings_call(b'{"model": "public", "input": "hi"}'), target("anthropic"))
    assert (caught.value.status, caught.value.code) == (400, "unsupported_endpoint")


def test_translation_notes_are_header_safe() -> None:
    body = {
        "model": "public",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
        "weird\r\nX-Injected: 1": True,
        "caf\u00e9": 1,
    }
    exchange = exchange_for(messages_call(orjson.dumps(body), {}), target("openai"))
    header = exchange.notes_header()
    assert header and all(" " <= c <= "~" for c in header)
    assert spec_for(Dialect.MESSAGES).error_format.value == "anthropic"


def test_a_request_shape_no_translator_expected_is_the_clients_400_not_a_500() -> None:
    from gateway.kernel.errors import GatewayError

    # Found by the fuzz: chat messages without a role, for an Anthropic upstream.
    call = chat_call(orjson.dumps({"model": "public", "messages": [{}, {"x": [1]}]}))
    with pytest.raises(GatewayError) as caught:
        exchange_for(call, target("anthropic"))
    assert (caught.value.status, caught.value.code) == (400, "invalid_request")


@pytest.mark.parametrize(
    ("kind", "given", "stored"),
    [
        ("anthropic", "https://api.anthropic.com", "https://api.anthropic.com/v1"),  # ANTHROPIC_BASE_URL's form
        ("anthropic", "https://api.anthropic.com/v1/", "https://api.anthropic.com/v1"),
        ("openai", "https://api.openai.com", "https://api.openai.com/v1"),
        ("openai", "https://api.openai.com/v1", "https://api.openai.com/v1"),
        ("ollama", "http://gpu-box:11434", "http://gpu-box:11434/v1"),  # OLLAMA_HOST's form
        ("openai-compatible", "http://vllm:8000", "http://vllm:8000/v1"),
        ("azure", "https://res.openai.azure.com", "https://res.openai.azure.com/openai"),
        ("openrouter", "https://openrouter.ai/api/v1", "https://openrouter.ai/api/v1"),  # any other path is kept
    ],
)
@pytest.mark.django_db
def test_provider_create_accepts_the_bare_host_and_the_versioned_url(kind: str, given: str, stored: str) -> None:
    out = io.StringIO()
    call_command("provider_create", "p", "--kind", kind, "--base-url", given, "--api-key", "sk-x", stdout=out)
    assert Provider.objects.get(name="p").base_url == stored
    assert out.getvalue().strip().endswith(f"at {stored}")  # the effective URL is shown


@pytest.mark.parametrize("url", ["notaurl", "ftp://host/v1", "https://", "http://host:99999/v1", "https://a b/v1"])
@pytest.mark.django_db
def test_provider_create_refuses_a_base_url_that_is_not_an_http_url(url: str) -> None:
    with pytest.raises(CommandError, match="not an http"):
        call_command("provider_create", "p", "--base-url", url, "--api-key", "sk-x", stdout=io.StringIO())
    assert not Provider.objects.filter(name="p").exists()


def test_an_anthropic_provider_on_the_bare_host_sends_messages_to_v1_messages() -> None:
    from proxy.presets import base_url_normalize

    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    call = messages_call(orjson.dumps(body), {})
    url = base_url_normalize("anthropic", "https://api.anthropic.com")
    assert exchange_for(call, target("anthropic", url)).request.url == "https://api.anthropic.com/v1/messages"
