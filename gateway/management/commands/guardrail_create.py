from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.audit import command_actor
from proxy.guardrails.rules import ACTIONS, KINDS, STAGES
from proxy.guardrails.services import guardrail_upsert


class Command(BaseCommand):
    help = (
        "Create a guardrail: what to look for (secrets, pii, or a regex), what to do on a match (block, redact, "
        "flag) and where (input: before the provider; output: the answer). Attach it with tenant_create or "
        "key_create --guardrails NAME. Safe to re-run: the same options change nothing, others update it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="Letters, numbers, underscores or hyphens.")
        parser.add_argument("--kind", required=True, choices=KINDS)
        parser.add_argument("--pattern", default="", metavar="RE", help="The regular expression (with --kind regex).")
        parser.add_argument("--action", required=True, choices=ACTIONS)
        parser.add_argument("--stage", required=True, choices=STAGES)
        parser.add_argument("--disabled", action="store_true", help="Keep it, but apply it to nothing for now.")

    def handle(self, *args: Any, name: str, kind: str, pattern: str, action: str, stage: str, **options: Any) -> None:
        try:
            guardrail, outcome, changed = guardrail_upsert(
                name=name,
                kind=kind,
                pattern=pattern,
                action=action,
                stage=stage,
                enabled=not options["disabled"],
                actor=command_actor(__name__),
            )
        except ValueError as exc:
            raise CommandError(f"guardrail {name}: {exc}") from None
        what = f"{guardrail.kind}: {guardrail.action} on {guardrail.stage}" + (
            "" if guardrail.enabled else ", disabled"
        )
        if outcome == "updated":
            outcome += f" ({', '.join(changed)})"
        self.stdout.write(f"{outcome} guardrail {guardrail.name} ({what})")
