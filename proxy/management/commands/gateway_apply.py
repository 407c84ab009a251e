from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.audit import command_actor
from proxy.apply import ApplyError, config_apply, config_load


class Command(BaseCommand):
    help = (
        "Create or update providers, routes, aliases, routers, prices and guardrails from a YAML file (all or nothing)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)

    def handle(self, *args: Any, file: Path, **options: Any) -> None:
        try:
            counts = config_apply(config_load(file), actor=command_actor(__name__))
        except ApplyError as exc:
            raise CommandError(f"{file}: {exc}; nothing was applied") from None
        summary = ", ".join(f"{n} {what}" for what, n in counts.items()) or "nothing to do"
        self.stdout.write(f"applied {file}: {summary}")
