from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.audit import command_actor
from proxy.services import alias_delete, alias_upsert


class Command(BaseCommand):
    help = (
        "Give a route another name (big -> gpt-4o), or map every name a shell pattern matches to it "
        "('claude-*-opus-*' -> big). Run it again to change the target or priority; --delete removes it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("pattern", help="An exact name, or a shell pattern with *, ? or [...] (quote it).")
        parser.add_argument("--to", dest="target", help="The route that serves it (a concrete route name).")
        parser.add_argument("--priority", type=int, default=0, help="Among matching patterns, lower wins.")
        parser.add_argument("--note", default=None, help="Free text shown in admin.")
        parser.add_argument("--delete", action="store_true", help="Remove the alias instead.")

    def handle(self, *args: Any, pattern: str, target: str | None, delete: bool, **options: Any) -> None:
        if delete:
            self.stdout.write(
                f"{'deleted' if alias_delete(pattern=pattern, actor=command_actor(__name__)) else 'no'} alias {pattern}"
            )
            return
        if not target:
            raise CommandError("--to MODEL is required (or --delete)")
        try:
            alias, changed = alias_upsert(
                pattern=pattern,
                target=target,
                priority=options["priority"],
                note=options["note"],
                actor=command_actor(__name__),
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        kind = "pattern" if alias.is_pattern else "alias"
        self.stdout.write(
            f"{'saved' if changed else 'unchanged'} {kind} {alias.pattern} -> {alias.target_model} (priority {alias.priority})"
        )
