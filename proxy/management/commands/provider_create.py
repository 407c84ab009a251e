from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.audit import command_actor
from proxy.apply import provider_save
from proxy.models import Provider
from proxy.presets import preset_for
from proxy.services import TIMEOUT_FIELDS


class Command(BaseCommand):
    help = "Create or update an upstream provider."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument(
            "--kind",
            default="openai",
            choices=Provider.Kind.values,
            help="The provider's preset: its protocol, default base URL and credential variable.",
        )
        parser.add_argument(
            "--base-url",
            help="Default: the kind's (required for azure and openai-compatible). "
            "The bare host (https://api.anthropic.com) or the versioned URL (.../v1).",
        )
        credential = parser.add_mutually_exclusive_group()
        credential.add_argument("--api-key", help="Stored encrypted. Prefer --api-key-env in shared shells.")
        credential.add_argument("--api-key-env", help="Read the credential from this environment variable.")
        parser.add_argument("--connect-timeout", type=float, metavar="S", help="Seconds to connect.")
        parser.add_argument("--first-byte-timeout", type=float, metavar="S", help="Seconds to the response headers.")
        parser.add_argument("--idle-timeout", type=float, metavar="S", help="Longest silence between two chunks.")

    def handle(self, *args: Any, name: str, **options: Any) -> None:
        preset = preset_for(options["kind"])
        base_url = options["base_url"] or preset.base_url
        if not base_url:
            raise CommandError(f"--base-url is required for a provider of kind {preset.name}.")
        try:
            provider, changed = provider_save(
                actor=command_actor(__name__),
                name=name,
                kind=options["kind"],
                base_url=base_url,
                api_key=options["api_key"],
                api_key_env=options["api_key_env"],
                # Only the ones given: the others keep their value.
                timeouts={field: options[field] for field in TIMEOUT_FIELDS if options[field] is not None},
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"{'saved' if changed else 'unchanged'} provider {provider.name} ({provider.kind}) at {provider.base_url}"
        )
