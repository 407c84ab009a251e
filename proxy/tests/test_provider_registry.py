"""Every wire protocol has one adapter behind one interface, and a protocol
without one is a clear error when the process starts, never a 500 later."""

import dataclasses

import pytest

from proxy.presets import PRESETS, Preset
from proxy.providers.base import ProviderAdapter
from proxy.providers.registry import ADAPTERS, UnknownProtocolError, adapter_for, adapter_for_protocol, adapters_check


@pytest.mark.parametrize("preset", PRESETS, ids=lambda preset: preset.name)
def test_each_preset_kind_has_an_adapter_that_speaks_the_whole_interface(preset: Preset) -> None:
    adapter = adapter_for(preset.name)

    assert isinstance(adapter, ProviderAdapter)
    assert adapter is ADAPTERS[preset.protocol]
    assert adapter.native_dialects(preset)  # serves at least one client API as it is


def test_an_unknown_kind_gets_the_openai_adapter() -> None:
    assert adapter_for("something-new") is ADAPTERS["openai"]


def test_a_preset_whose_protocol_has_no_adapter_is_refused_naming_it_and_the_known_ones() -> None:
    grpc = dataclasses.replace(PRESETS[0], name="grpc-llm", protocol="grpc")

    with pytest.raises(UnknownProtocolError) as refused:
        adapters_check([*PRESETS, grpc])

    assert not isinstance(refused.value, KeyError)
    assert str(refused.value) == (
        "provider kind 'grpc-llm' speaks the wire protocol 'grpc', which no adapter serves"
        " (known: anthropic, azure, openai)"
    )


def test_looking_up_a_protocol_without_an_adapter_is_the_same_clear_error() -> None:
    with pytest.raises(UnknownProtocolError, match="'grpc', which no adapter serves"):
        adapter_for_protocol("grpc")


def test_only_the_openai_protocol_has_a_model_list_that_may_carry_descriptions() -> None:
    from gateway.kernel.context import ProviderConfig

    def listed(protocol: str) -> tuple[str, dict[str, str]] | None:
        provider = ProviderConfig("p", protocol, "https://p.test/v1/", api_key="sk-p")
        return ADAPTERS[protocol].model_list_endpoint(provider)

    assert listed("openai") == (
        "https://p.test/v1/models",
        {"Accept": "application/json", "Authorization": "Bearer sk-p"},
    )
    assert listed("azure") is None  # its list is of deployments
    assert listed("anthropic") is None  # display names, no descriptions
