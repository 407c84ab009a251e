import os
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from accounts.models import Tenant
from accounts.services import api_key_issue, tenant_create
from proxy.presets import PRESETS
from proxy.services import provider_upsert, route_upsert

DEMO_SLUG = "demo"


class Command(BaseCommand):
    help = (
        "First-start setup for the embedded run: a provider and routes for every provider credential in "
        "the environment (OPENAI_API_KEY, ANTHROPIC_API_KEY, ...), and a demo tenant whose key is printed once."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        # The address `serve` will listen on (the same defaults), only to print
        # the base URL clients should use.
        parser.add_argument("--host", default=os.environ.get("GATEWAY_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("GATEWAY_PORT", "8000")))

    def handle(self, *args: Any, host: str, port: int, **options: Any) -> None:
        # Presets without a fixed base URL (Azure, self-hosted) need provider_create.
        found = [p for p in PRESETS if p.base_url and p.api_key_env and os.environ.get(p.api_key_env)]
        for preset in found:
            provider, _ = provider_upsert(
                name=preset.name, kind=preset.name, base_url=preset.base_url, api_key_env=preset.api_key_env
            )
            route_upsert(model=f"{preset.name}/*", provider=provider)
            for prefix in preset.model_prefixes:
                route_upsert(model=f"{prefix}*", provider=provider, upstream_model=prefix)
            self.stdout.write(f"provider {preset.name} from ${preset.api_key_env}: models {preset.name}/<model>")
        if not found:
            names = ", ".join(p.api_key_env for p in PRESETS if p.base_url and p.api_key_env)
            self.stdout.write(f"no provider credentials in the environment (looked for {names});")
            self.stdout.write(
                "add one with: .venv/bin/python manage.py provider_create NAME --base-url URL --api-key-env VAR"
            )

        if Tenant.objects.filter(slug=DEMO_SLUG).exists():
            self.stdout.write(
                f"tenant '{DEMO_SLUG}' exists; issue another key with: .venv/bin/python manage.py key_create {DEMO_SLUG}"
            )
            return
        tenant = tenant_create(slug=DEMO_SLUG, name="Demo")
        plaintext, _ = api_key_issue(tenant=tenant, name="demo key")
        self.stdout.write("")
        self.stdout.write(f"Created tenant '{DEMO_SLUG}' and its key (shown only this once):")
        self.stdout.write(f"    {plaintext}")
        self.stdout.write(
            f"Try: OPENAI_BASE_URL={client_base_url(host, port)} OPENAI_API_KEY=<key> with the openai SDK."
        )
        self.stdout.write("")


def client_base_url(host: str, port: int) -> str:
    """The URL a client on this machine uses: a wildcard address is not one
    to connect to, and an IPv6 address needs brackets."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/v1"
