"""Provider adapters: pure translation between the gateway and one wire
protocol (URLs, credentials, usage conventions), each behind one interface
(base.ProviderAdapter). A provider's kind names its protocol (proxy.presets);
registry.adapter_for gives its adapter, and proxy.exchange asks only that."""
