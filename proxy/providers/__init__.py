"""Provider adapters: pure translation between the gateway and one API."""

from proxy.providers.base import ProviderAdapter
from proxy.providers.openai import OpenAIAdapter

_ADAPTERS: dict[str, ProviderAdapter] = {"openai": OpenAIAdapter()}


def adapter_for(kind: str) -> ProviderAdapter:
    return _ADAPTERS[kind]
