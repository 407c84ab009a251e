from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.audit import command_actor
from proxy.descriptions import DescriptionsError, descriptions_sync, models_read


class Command(BaseCommand):
    help = (
        "Fill the routes' empty descriptions (which smart routers' designators read) from the providers' own "
        "model lists and OpenRouter's public model list. Descriptions already set are never changed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--file", type=Path, default=None, help="A saved copy of OpenRouter's model list JSON instead of the URL."
        )
        parser.add_argument(
            "--url", default=None, help="Where to download the list (default: the PROXY_DESCRIPTIONS_URL setting)."
        )
        parser.add_argument("--skip-providers", action="store_true", help="Do not ask the providers' own model lists.")

    def handle(self, *args: Any, file: Path | None, url: str | None, skip_providers: bool, **options: Any) -> None:
        try:
            entries = models_read(file=file, url=url or settings.PROXY_DESCRIPTIONS_URL)
        except DescriptionsError as exc:
            raise CommandError(str(exc)) from None
        report = descriptions_sync(entries=entries, providers=not skip_providers, actor=command_actor(__name__))
        for provider, error in sorted(report.provider_errors.items()):
            self.stderr.write(f"provider {provider}: its model list could not be read ({error})")
        for model, source in sorted(report.filled.items()):
            self.stdout.write(f"described {model} (from {source})")
        self.stdout.write(
            f"{len(report.filled)} descriptions filled, {len(report.unmatched)} routes without one in any list"
        )
