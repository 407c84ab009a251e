"""The client APIs the gateway serves, one module each, and their registry.

A module here says everything the gateway knows of one client API: the
paths it is called on, its parser, the envelope its errors travel in, how
its stream is written, whether its answers are cached, and its translators
to and from the hub (chat completions). proxy.apis.registry holds one line
per API; callers ask `spec_for(dialect)` instead of branching on the dialect.
"""
