from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from proxy.models import Provider
from proxy.services import provider_upsert


class Command(BaseCommand):
    help = "Create or update an upstream provider."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--kind", default="openai", choices=Provider.Kind.values)
        parser.add_argument("--base-url", required=True)
        credential = parser.add_mutually_exclusive_group()
        credential.add_argument("--api-key", help="Stored encrypted. Prefer --api-key-env in shared shells.")
        credential.add_argument("--api-key-env", help="Read the credential from this environment variable.")

    def handle(self, *args: Any, name: str, **options: Any) -> None:
        try:
            provider, changed = provider_upsert(
                name=name,
                kind=options["kind"],
                base_url=options["base_url"],
                api_key=options["api_key"],
                api_key_env=options["api_key_env"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"{'saved' if changed else 'unchanged'} provider {provider.name}")
