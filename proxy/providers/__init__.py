"""Provider adapters: pure translation between the gateway and one
provider's protocol (URLs, credentials, usage conventions). Which adapter a
provider uses follows from its kind (proxy.presets); proxy.exchange picks."""
