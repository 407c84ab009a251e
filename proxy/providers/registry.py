"""Which adapter speaks each wire protocol, and the lookup proxy.exchange uses.

A provider's kind names a preset (proxy.presets), the preset a wire
protocol, and the protocol an adapter here. Adding a protocol takes one
adapter module in proxy/providers/ (a class with ProviderAdapter's methods,
proxy.providers.base) and one line in ADAPTERS; a preset naming a protocol
with no line fails at import, when the process starts, not on a request.
"""

from collections.abc import Iterable

from proxy.presets import ANTHROPIC, AZURE, OPENAI, PRESETS, Preset, preset_for
from proxy.providers.anthropic import AnthropicAdapter
from proxy.providers.base import ProviderAdapter
from proxy.providers.openai import AzureOpenAIAdapter, OpenAIAdapter

ADAPTERS: dict[str, ProviderAdapter] = {
    OPENAI: OpenAIAdapter(),
    AZURE: AzureOpenAIAdapter(),
    ANTHROPIC: AnthropicAdapter(),
}


class UnknownProtocolError(LookupError):
    """A preset names a wire protocol no adapter speaks: a programming error
    no retry can help, reported with the protocols there are."""

    def __init__(self, protocol: str, where: str) -> None:
        known = ", ".join(sorted(ADAPTERS))
        super().__init__(f"{where} speaks the wire protocol {protocol!r}, which no adapter serves (known: {known})")
        self.protocol = protocol


def adapter_for_protocol(protocol: str, *, where: str = "a provider") -> ProviderAdapter:
    try:
        return ADAPTERS[protocol]
    except KeyError:
        raise UnknownProtocolError(protocol, where) from None


def adapter_for(kind: str) -> ProviderAdapter:
    """The adapter of a provider kind (unknown kinds speak plain OpenAI, as
    proxy.presets.preset_for says)."""
    preset = preset_for(kind)
    return adapter_for_protocol(preset.protocol, where=f"provider kind {preset.name!r}")


def adapters_check(presets: Iterable[Preset] = PRESETS) -> None:
    """Raise UnknownProtocolError for the first preset whose protocol has no adapter."""
    for preset in presets:
        adapter_for_protocol(preset.protocol, where=f"provider kind {preset.name!r}")


adapters_check()
