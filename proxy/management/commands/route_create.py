from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from proxy.models import Provider
from proxy.services import route_upsert


class Command(BaseCommand):
    help = "Route a public model name (or a wildcard such as openai/*) to a provider."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("model")
        parser.add_argument("--provider", required=True)
        parser.add_argument("--upstream-model", default="", help="Empty: the name the client asked for.")

    def handle(self, *args: Any, model: str, **options: Any) -> None:
        provider = Provider.objects.filter(name=options["provider"]).first()
        if provider is None:
            raise CommandError(f"no provider {options['provider']!r}; create it with provider_create")
        route, changed = route_upsert(model=model, provider=provider, upstream_model=options["upstream_model"])
        self.stdout.write(f"{'saved' if changed else 'unchanged'} route {route.model} -> {provider.name}")
