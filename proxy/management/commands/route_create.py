from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.audit import command_actor
from proxy.models import Provider
from proxy.services import route_upsert


class Command(BaseCommand):
    help = (
        "Route a public model name (or a wildcard such as openai/*) to a provider. Run it again with another "
        "provider or upstream model to add a deployment; with the same ones to change its weight, priority or limits."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("model")
        parser.add_argument("--provider", required=True)
        parser.add_argument("--upstream-model", default="", help="Empty: the name the client asked for.")
        parser.add_argument("--weight", type=int, default=1, help="Share of traffic among deployments of one priority.")
        parser.add_argument("--priority", type=int, default=0, help="Lower is preferred; higher ones are standbys.")
        parser.add_argument(
            "--rpm",
            type=int,
            default=None,
            help="Requests per minute the provider allows this deployment (none: no limit).",
        )
        parser.add_argument(
            "--tpm",
            type=int,
            default=None,
            help="Tokens per minute the provider allows this deployment (none: no limit).",
        )
        parser.add_argument(
            "--fallback",
            action="append",
            dest="fallbacks",
            metavar="OTHER",
            help="Another model to try when every deployment fails (repeat, in order; replaces the route's list).",
        )
        parser.add_argument(
            "--description", default=None, metavar="TEXT", help="What the model is good at (smart routers read it)."
        )

    def handle(self, *args: Any, model: str, **options: Any) -> None:
        provider = Provider.objects.filter(name=options["provider"]).first()
        if provider is None:
            raise CommandError(f"no provider {options['provider']!r}; create it with provider_create")
        try:
            route, changed = route_upsert(
                model=model,
                provider=provider,
                upstream_model=options["upstream_model"],
                weight=options["weight"],
                priority=options["priority"],
                rpm=options["rpm"],
                tpm=options["tpm"],
                fallbacks=options["fallbacks"],
                description=options["description"],
                actor=command_actor(__name__),
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        deployments = route.deployments.filter(is_active=True).count()
        self.stdout.write(
            f"{'saved' if changed else 'unchanged'} route {route.model} -> {provider.name} ({deployments} deployments)"
        )
