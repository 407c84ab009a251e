from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.audit import command_actor
from accounts.models import ApiKey
from accounts.services import api_key_revoke


class Command(BaseCommand):
    help = "Revoke a key by its display prefix (as shown in admin and by key_create)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("prefix")

    def handle(self, *args: Any, prefix: str, **options: Any) -> None:
        keys = list(ApiKey.objects.filter(prefix=prefix.rstrip("…")))
        if len(keys) != 1:
            raise CommandError(f"{len(keys)} keys have the prefix {prefix!r}; revoke it in admin instead")
        api_key_revoke(api_key=keys[0], actor=command_actor(__name__))
        self.stdout.write(f"revoked {keys[0]}")
