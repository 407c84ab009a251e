from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.audit import command_actor
from gateway.kernel import cli
from proxy.router_services import router_delete, router_upsert


class Command(BaseCommand):
    help = (
        "A smart router: clients that ask for NAME are answered by the candidate the designator model picks "
        "for their query. Run it again to change it; --delete removes it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="The model name clients ask for, such as auto.")
        parser.add_argument("--designator", metavar="MODEL", help="The model that picks a candidate.")
        parser.add_argument(
            "--candidates", type=cli.names, metavar="A,B", help="Model names the designator chooses from, in order."
        )
        parser.add_argument("--purpose", default=None, metavar="TEXT", help="What the router is for (told to it).")
        parser.add_argument(
            "--fallback", default=None, metavar="MODEL", help="The candidate used when the designator fails."
        )
        parser.add_argument("--delete", action="store_true", help="Remove the router instead.")

    def handle(self, *args: Any, name: str, delete: bool, **options: Any) -> None:
        if delete:
            removed = router_delete(name=name, actor=command_actor(__name__))
            self.stdout.write(f"{'deleted' if removed else 'no'} router {name}")
            return
        if not options["designator"] or not options["candidates"]:
            raise CommandError("--designator MODEL and --candidates A,B are required (or --delete)")
        try:
            router, changed = router_upsert(
                name=name,
                designator=options["designator"],
                candidates=options["candidates"],
                purpose=options["purpose"],
                fallback=options["fallback"],
                actor=command_actor(__name__),
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        fallback = router.fallback or router.candidates[0]
        self.stdout.write(
            f"{'saved' if changed else 'unchanged'} router {router.name}: {router.designator} picks one of "
            f"{', '.join(router.candidates)} (fallback {fallback})"
        )
