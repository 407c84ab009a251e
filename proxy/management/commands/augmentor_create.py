from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.audit import command_actor
from gateway.kernel import cli
from proxy.augmentor_services import SEARCH_PROVIDERS, AugmentorSpec, augmentor_delete, augmentor_upsert


class Command(BaseCommand):
    help = (
        "An augmentor: clients that ask for NAME are answered by the target model, after the designator model "
        "decided whether their query needs a web search or pages scraped, and what was found joined the prompt. "
        "Run it again with the whole definition to change it; --delete removes it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="The model name clients ask for, such as researcher.")
        parser.add_argument("--designator", metavar="MODEL", help="The model that decides what to look up.")
        parser.add_argument("--target", metavar="MODEL", help="The model that answers.")
        parser.add_argument("--search-provider", choices=SEARCH_PROVIDERS, default=SEARCH_PROVIDERS[0])
        parser.add_argument("--max-search-results", type=cli.seconds, default=5, metavar="N")
        parser.add_argument("--max-scrape-urls", type=cli.seconds, default=3, metavar="N")
        parser.add_argument(
            "--max-context-tokens", type=cli.seconds, default=2000, metavar="N", help="Most added to the prompt."
        )
        parser.add_argument("--purpose", default="", metavar="TEXT", help="What the augmentor is for (told to it).")
        parser.add_argument("--delete", action="store_true", help="Remove the augmentor instead.")

    def handle(self, *args: Any, name: str, delete: bool, **options: Any) -> None:
        if delete:
            removed = augmentor_delete(name=name, actor=command_actor(__name__))
            self.stdout.write(f"{'deleted' if removed else 'no'} augmentor {name}")
            return
        if not options["designator"] or not options["target"]:
            raise CommandError("--designator MODEL and --target MODEL are required (or --delete)")
        spec = AugmentorSpec(
            name=name,
            designator=options["designator"],
            target=options["target"],
            search_provider=options["search_provider"],
            max_search_results=options["max_search_results"],
            max_scrape_urls=options["max_scrape_urls"],
            max_context_tokens=options["max_context_tokens"],
            purpose=options["purpose"],
        )
        try:
            row, changed = augmentor_upsert(spec, actor=command_actor(__name__))
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"{'saved' if changed else 'unchanged'} augmentor {row.name}: {row.designator} decides, "
            f"{row.search_provider} searches, {row.target} answers"
        )
